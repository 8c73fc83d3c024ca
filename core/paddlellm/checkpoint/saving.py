"""Saving a built model as a Hugging Face-layout checkpoint: the one service behind every
``save_pretrained`` (plain and quantized models alike).

Writes ``config.json`` (the family's ``config_to_hf`` plus ``dtype``/``torch_dtype`` and, for
a quantized model, its ``quantization_config``), ``generation_config.json`` and safetensors
weights, streamed one tensor at a time (peak memory: the model plus its largest tensor):

* float parameters go through ``model.family`` (``save_groups`` / ``to_hf_state``) in
  transformers' layout (linear weights transposed back to ``(out, in)``), cast to ``dtype``;
* tensors of layers that declare :class:`~paddlellm.interfaces.QuantizedModule` are written
  under the model's own names in their own dtypes (int8/int4 packs, float16 scales, FP8).

Importing this module does not import Paddle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ._dtypes import canonical_dtype, convert_storage
from .loading import linear_weight_names, native_tensors
from .safetensors_io import TensorSource
from .writer import _source, write_sharded

#: dtypes a checkpoint's float tensors can be saved in
FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
#: config fields that ``generation_config.json`` repeats
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _torch_layout(param: Any, transpose: bool) -> np.ndarray:
    import paddle

    array = (param.astype("float32") if param.dtype != paddle.float32 else param).numpy()
    return np.ascontiguousarray(array.T) if transpose else array


def torch_layout_state(model: Any, skip: frozenset[str] | set[str] = frozenset()) -> dict[str, np.ndarray]:
    """Our parameters (except ``skip``) as float32 NumPy arrays in transformers' layout
    (linear weights transposed)."""
    linear = linear_weight_names(model)
    return {name: _torch_layout(p, name in linear)
            for name, p in model.named_parameters() if name not in skip}


def hf_tensor_sources(model: Any, dtype: str, skip: frozenset[str] | set[str] = frozenset()) -> list[TensorSource]:
    """Lazy writer sources of the model's float tensors under their Hugging Face names: each
    is computed (from one group of our parameters) only when the writer reaches it."""
    family, config = model.family, model.config
    params = {n: p for n, p in model.named_parameters() if n not in skip}
    linear = linear_weight_names(model)
    sources = []
    for group in family.save_groups(list(params), config):
        shapes = {}
        for name in group:  # zero-stride stand-ins: the mapping's output shapes, no data
            shape = tuple(params[name].shape)
            shape = shape[::-1] if name in linear else shape
            shapes[name] = np.broadcast_to(np.zeros((), np.float32), shape)
        for hf_name, dummy in family.to_hf_state(shapes, config).items():
            def load(group=group, hf_name=hf_name):
                state = {n: _torch_layout(params[n], n in linear) for n in group}
                array = np.ascontiguousarray(family.to_hf_state(state, config)[hf_name])
                return convert_storage(array, "float32", dtype)
            sources.append(TensorSource(hf_name, dtype, tuple(dummy.shape), load))
    return sources


def check_expressible(family: Any, config: Any, hf: Mapping[str, Any]) -> None:
    """Refuse to save a config the family's ``config.json`` cannot describe (it would load wrong)."""
    back = family.config_from_hf(hf)
    lost = [f"{k}={getattr(config, k)!r}" for k in config.to_dict()
            if getattr(back, k) != getattr(config, k)]
    if lost:
        raise ValueError(f"a {family.name} config.json cannot express {', '.join(lost)}; "
                         "save this model under a family that has these features")


def save_pretrained(model: Any, directory: str | os.PathLike, *, max_shard_size: str | int = "5GB",
                    dtype: str | None = None) -> list[str]:
    """Write ``model`` as a Hugging Face checkpoint in ``directory``; returns the weight files.

    ``dtype`` (default: the model's storage dtype) is the dtype of the float tensors. A quantized model
    (one carrying ``quantization_config``) is saved in its own dtype, with its quantized
    layers' tensors as they are and ``quantization_config`` in ``config.json``.
    """
    family, config = model.family, model.config
    quantization_config = getattr(model, "quantization_config", None)
    native = native_tensors(model) if quantization_config else {}
    own = getattr(model, "storage_dtype", None) or model.dtype  # low-precision storage: keep it
    if quantization_config and dtype is not None and canonical_dtype(dtype) != canonical_dtype(own):
        raise ValueError("a quantized model is saved in its own dtype; dtype= cannot change it")
    dtype = canonical_dtype(dtype or own)
    if dtype not in FLOAT_DTYPES:
        raise ValueError(f"cannot save in dtype '{dtype}'; choose one of {', '.join(FLOAT_DTYPES)}")
    hf = {**family.config_to_hf(config), "dtype": dtype, "torch_dtype": dtype}
    check_expressible(family, config, hf)
    metadata = {"format": "pt"}
    if quantization_config:
        hf["quantization_config"] = dict(quantization_config)
        metadata["quantization"] = str(quantization_config["quant_type"])
    sources = hf_tensor_sources(model, dtype, skip=set(native))
    clash = {s.name for s in sources} & set(native)
    if clash:
        raise ValueError(f"quantized tensor names collide with float ones: {sorted(clash)[:3]}")
    sources += [_source(name, tensor, None) for name, tensor in native.items()]
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = write_sharded(sources, directory, max_shard_size=max_shard_size, metadata=metadata)
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    gen = {k: getattr(config, k) for k in GENERATION_KEYS if getattr(config, k, None) is not None}
    gen.update(getattr(model, "generation_config", None) or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return [str(f) for f in files]


__all__ = ["save_pretrained", "hf_tensor_sources", "torch_layout_state", "check_expressible",
           "FLOAT_DTYPES", "GENERATION_KEYS"]
