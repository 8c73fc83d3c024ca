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

Saving and loading are the core's services, as for float models. ``model.save_pretrained``
(:func:`paddlellm.checkpoint.save_pretrained`) writes the quantized layers' tensors as they are
and ``quantization_config`` into ``config.json``; loading
(:func:`paddlellm.checkpoint.load_pretrained`) builds the
float architecture without initialisation, lets the quantizer named by ``quant_type`` replace
the layers (``prepare_for_loading``, or ``prepare_for_checkpoint`` when the layers depend on
the checkpoint's tensors), then copies tensors one at a time; the quantized layers declare
:class:`paddlellm.interfaces.QuantizedModule`, so their tensors load under their own names.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import paddle.nn as nn

from paddlellm.api import load_pretrained, quantized_modules


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
    """Record the config on the model: ``model.save_pretrained`` (the core's) then writes the
    quantized layout, and ``from_pretrained`` of that checkpoint comes back here."""
    model.quantization_config = dict(quantization_config)
    return model
