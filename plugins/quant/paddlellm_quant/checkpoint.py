"""Quantized checkpoints: Hugging Face layout plus integer weights and a ``quantization_config``.

GPTQ and AWQ write their published layouts (:mod:`.packed`; ``quant_method`` ``"gptq"`` /
``"awq"``), which ``transformers``, vLLM and the GPTQ/AWQ tools read. The other types use this
plugin's own layout under its own ``quant_method`` names (``paddlellm_weight_only``,
``paddlellm_a8w8``, ``paddlellm_fp8``), which no other tool claims. ``config.json`` is the
family's config with ``quantization_config`` added, e.g.::

    {"quant_type": "weight_only_int4", "quant_method": "paddlellm_weight_only", "bits": 4,
     "group_size": 64, "sym": true, "modules_to_not_convert": ["lm_head"], "format": "paddlellm", ...}

``model.safetensors`` holds the float tensors (embeddings, norms, unquantized linears) under
their Hugging Face names, and each quantized layer's tensors under the model's module name:
``model.layers.0.self_attn.q_proj.qweight`` (int8, or uint8 with two int4 per byte),
``...q_proj.scales`` (float, ``(out, n_groups)``), optional ``...q_proj.pre_scale`` and
``...q_proj.bias`` (see :mod:`paddlellm_quant.layers`).

Loading is the core's service (:func:`paddlellm.checkpoint.load_pretrained`): it builds the
float architecture without initialisation, lets the quantizer named by ``quant_type`` replace
the layers (``prepare_for_loading``, or ``prepare_for_checkpoint`` when the layers depend on
the checkpoint's tensors), then copies tensors one at a time; the quantized layers declare
:class:`paddlellm.interfaces.QuantizedModule`, so their tensors load under their own names.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import paddle
import paddle.nn as nn

from paddlellm.checkpoint import (linear_weight_names, load_pretrained, native_tensors, quantized_modules,
                                  save_state_dict)

GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _float_state(model: nn.Layer, skip: set[str]) -> dict[str, np.ndarray]:
    """Float parameters (not in quantized layers) as float32 arrays in transformers' layout."""
    linear = linear_weight_names(model)
    state = {}
    for name, p in model.named_parameters():
        if name in skip:
            continue
        a = p.astype("float32").numpy()
        state[name] = np.ascontiguousarray(a.T) if name in linear else a
    return state


def save_quantized(model: nn.Layer, directory: str | os.PathLike, *, max_shard_size: str = "5GB") -> list[str]:
    """Write ``model`` (quantized in place by this plugin) as a quantized HF-layout checkpoint."""
    qc = getattr(model, "quantization_config", None)
    if not qc:
        raise ValueError("model has no quantization_config: quantize it first")
    family, config = model.family, model.config
    dtype = model.dtype
    quant = native_tensors(model)
    floats = _float_state(model, set(quant))
    tensors: dict[str, Any] = {}
    for group in family.save_groups(list(floats), config):
        tensors.update(family.to_hf_state({n: floats[n] for n in group}, config))
    clash = set(tensors) & set(quant)
    if clash:
        raise ValueError(f"quantized tensor names collide with float ones: {sorted(clash)[:3]}")
    # quantized layers' tensors keep their own dtypes (FP8 weights, GPTQ/AWQ float16 scales,
    # int32 packs); the float tensors (float32 arrays here) are cast to the model's dtype
    if dtype != "float32":
        tensors = {k: paddle.to_tensor(v).astype(dtype) for k, v in tensors.items()}
    tensors.update(quant)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = save_state_dict(tensors, directory, max_shard_size=max_shard_size,
                            metadata={"format": "pt", "quantization": qc["quant_type"]})
    hf = {**family.config_to_hf(config), "dtype": dtype, "torch_dtype": dtype,
          "quantization_config": dict(qc)}
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    gen = {k: getattr(config, k) for k in GENERATION_KEYS if getattr(config, k, None) is not None}
    gen.update(getattr(model, "generation_config", None) or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return files


def load_quantized(family: Any, path: str | os.PathLike, quantizer: Any,
                   quantization_config: Mapping[str, Any], dtype: str = "float32") -> nn.Layer:
    """Build the architecture, let ``quantizer`` swap in quantized layers, load the tensors."""
    qc = dict(quantization_config)

    def prepare(model: nn.Layer, keys: list[str]) -> nn.Layer:
        if hasattr(quantizer, "prepare_for_checkpoint"):  # decides from the checkpoint's tensors
            return quantizer.prepare_for_checkpoint(model, qc, keys)
        return quantizer.prepare_for_loading(model, qc)

    model = load_pretrained(family, Path(path), dtype=dtype, prepare=prepare)
    for layer in quantized_modules(model).values():  # layers that cache facts about their tensors
        if hasattr(layer, "reset_cache"):
            layer.reset_cache()
    return mark_quantized(model, quantization_config)


def mark_quantized(model: nn.Layer, quantization_config: Mapping[str, Any]) -> nn.Layer:
    """Record the config on the model and make ``model.save_pretrained`` write the quantized layout."""
    model.quantization_config = dict(quantization_config)

    def save_pretrained(directory, *, max_shard_size: str = "5GB", dtype: str | None = None):
        if dtype is not None and dtype != model.dtype:
            raise ValueError("a quantized model is saved in its own dtype; dtype= cannot change it")
        return save_quantized(model, directory, max_shard_size=max_shard_size)

    model.save_pretrained = save_pretrained
    return model
