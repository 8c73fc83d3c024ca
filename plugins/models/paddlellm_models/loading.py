"""Hugging Face checkpoints <-> :class:`~paddlellm_models.decoder.CausalLM`.

Loading is the core's service (:mod:`paddlellm.checkpoint.loading`: build without random
init, copy tensors one at a time through the family's name map); saving streams one tensor at
a time through the family's ``to_hf_state``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from . import _ckpt
from ._ckpt import load_hf_weights, linear_weight_names  # noqa: F401  (re-exported)

_FLOAT = ("float16", "bfloat16", "float32", "float64")
GENERATION_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def load_pretrained(family: Any, path: str | os.PathLike, dtype: str = "float32"):
    """``family``'s model loaded from the checkpoint at ``path`` (the core's loading service)."""
    return _ckpt.load_pretrained(family, path, dtype=dtype)


def _torch_layout(param: paddle.Tensor, transpose: bool) -> np.ndarray:
    array = (param.astype("float32") if param.dtype != paddle.float32 else param).numpy()
    return np.ascontiguousarray(array.T) if transpose else array


def torch_layout_state(model: nn.Layer) -> dict[str, np.ndarray]:
    """Our parameters as float32 NumPy arrays in transformers' layout (linear weights transposed)."""
    linear = linear_weight_names(model)
    return {name: _torch_layout(p, name in linear) for name, p in model.named_parameters()}


def hf_tensor_sources(model: nn.Layer, dtype: str) -> list:
    """Lazy writer sources of the HF tensors: each is computed (from one group of our
    parameters) only when the writer reaches it, so saving holds one tensor at a time."""
    family, config = model.family, model.config
    params = dict(model.named_parameters())
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
                return _ckpt.convert_storage(array, "float32", dtype)
            sources.append(_ckpt.TensorSource(hf_name, dtype, tuple(dummy.shape), load))
    return sources


def check_expressible(family: Any, config: Any, hf: dict[str, Any]) -> None:
    """Refuse to save a config the family's ``config.json`` cannot describe (it would load wrong)."""
    back = family.config_from_hf(hf)
    lost = [f"{k}={getattr(config, k)!r}" for k in config.to_dict()
            if getattr(back, k) != getattr(config, k)]
    if lost:
        raise ValueError(f"a {family.name} config.json cannot express {', '.join(lost)}; "
                         "save this model under a family that has these features")


def save_pretrained(model: nn.Layer, directory: str | os.PathLike, *, max_shard_size: str = "5GB",
                    dtype: str | None = None) -> list[str]:
    """``config.json``, ``generation_config.json`` and safetensors weights in HF layout,
    streamed one tensor at a time (peak memory: the model plus its largest tensor)."""
    family, config = model.family, model.config
    dtype = _ckpt.canonical_dtype(dtype or model.dtype)
    if dtype not in _FLOAT:
        raise ValueError(f"cannot save in dtype '{dtype}'; choose one of {', '.join(_FLOAT)}")
    hf = {**family.config_to_hf(config), "dtype": dtype, "torch_dtype": dtype}
    check_expressible(family, config, hf)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files = _ckpt.write_sharded(hf_tensor_sources(model, dtype), directory,
                                max_shard_size=max_shard_size, metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    gen = {k: getattr(config, k) for k in GENERATION_KEYS if getattr(config, k) is not None}
    gen.update(getattr(model, "generation_config", None) or {})
    (directory / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return [str(f) for f in files]
