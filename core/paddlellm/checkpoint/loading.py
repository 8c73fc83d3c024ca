"""Loading a Hugging Face-layout checkpoint into a built model: the one service behind every
``from_pretrained`` (plain families and quantized checkpoints alike).

* :func:`load_pretrained` checks ``config.json`` (:func:`family_config`), builds the family's
  model without random init, lets an optional ``prepare(model, checkpoint_keys)`` swap
  layers (a quantizer's empty quantized layers), copies the weights and reads
  ``generation_config.json``.
* :func:`load_hf_weights` copies the tensors one at a time (peak memory: the model plus one
  tensor). A float tensor goes through ``model.family``: ignored names skipped,
  ``from_hf_tensor`` renames/splits it (a tied ``lm_head`` maps to nothing), linear weights
  are transposed from torch's ``(out, in)`` into Paddle's ``(in, out)``, values are cast to the
  parameter's dtype. Tensors of layers that declare
  :class:`~paddlellm.interfaces.QuantizedModule` are read under the model's own names in
  their stored dtypes. A tensor that maps to nothing in the model, a missing tensor and a
  shape mismatch are errors that name the tensor and the checkpoint.

Importing this module does not import Paddle.
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..interfaces import is_quantized_module
from .assign import assign_array
from .model_config import family_config, read_generation_config
from .reader import CheckpointReader

#: ``prepare(model, checkpoint_keys) -> model``: replace layers before the weights load
Prepare = Callable[[Any, list[str]], Any]


def linear_weight_names(model: Any) -> set[str]:
    """Parameters stored ``(in, out)`` by Paddle but ``(out, in)`` by transformers: the
    ``weight`` of every ``paddle.nn.Linear`` sublayer."""
    import paddle.nn as nn

    return {f"{name}.weight" if name else "weight"
            for name, layer in model.named_sublayers(include_self=True)
            if isinstance(layer, nn.Linear)}


def quantized_modules(model: Any) -> dict[str, Any]:
    """The sublayers of ``model`` that declare :class:`~paddlellm.interfaces.QuantizedModule`,
    by module path."""
    return {n: layer for n, layer in model.named_sublayers() if is_quantized_module(layer)}


def native_tensors(model: Any) -> dict[str, Any]:
    """Persistable buffers and parameters of the quantized layers, by full name
    (``model.layers.0.mlp.down_proj.qweight``): stored under these names, in their own dtypes."""
    out: dict[str, Any] = {}
    for mname, layer in quantized_modules(model).items():
        for key, tensor in layer.state_dict(include_sublayers=False).items():
            out[f"{mname}.{key}"] = tensor
    return out


def load_hf_weights(model: Any, path: str | os.PathLike) -> set[str]:
    """Copy the checkpoint at ``path`` into ``model`` (names mapped by ``model.family``);
    returns the names of the model tensors that were written."""
    family, config = model.family, model.config
    native = native_tensors(model)
    optional = {f"{m}.{t}" for m, layer in quantized_modules(model).items()
                for t in getattr(layer, "optional_tensors", ())}
    params = {n: p for n, p in model.named_parameters() if n not in native}
    linear = linear_weight_names(model)
    loaded: set[str] = set()
    with CheckpointReader(path) as reader:
        for key in reader.keys():
            if key in native:  # a quantized layer's own tensor (int8 weights, scales, ...)
                raw = reader.get_numpy(key, dtype="float32" if reader.is_floating(key) else None)
                assign_array(native[key], raw, key)
                loaded.add(key)
                continue
            if family.is_ignored(key):
                continue
            array = reader.get_numpy(key, dtype="float32")
            for name, value in family.from_hf_tensor(key, array, config):
                if name not in params:
                    raise KeyError(f"{family.name}: checkpoint tensor '{key}' of {path} maps to "
                                   f"'{name}', which the model does not have")
                assign_array(params[name], value.T if name in linear else value, name)
                loaded.add(name)
            del array
    missing = sorted((set(native) | set(params)) - loaded - (optional if loaded else set()))
    if missing:
        raise KeyError(f"{family.name}: the checkpoint at {path} lacks {len(missing)} tensors, "
                       f"e.g. {', '.join(missing[:5])}")
    return loaded


def checkpoint_keys(path: str | os.PathLike) -> list[str]:
    """The tensor names stored in the checkpoint at ``path`` (no tensor is read)."""
    with CheckpointReader(path) as reader:
        return list(reader.keys())


def load_pretrained(family: Any, path: str | os.PathLike, dtype: str = "float32", *,
                    prepare: Prepare | None = None) -> Any:
    """Build ``family``'s model for the checkpoint at ``path`` in ``dtype`` and load it.

    ``prepare(model, checkpoint_keys)`` may replace layers of the freshly built, uninitialised
    model (a quantizer's ``prepare_for_loading``) and returns the model to load into.
    """
    config = family_config(family, path)  # checked: errors name config.json and the field
    model = family.build(config, dtype=dtype, init=False)
    if prepare is not None:
        model = prepare(model, checkpoint_keys(path))
    load_hf_weights(model, path)
    gen = read_generation_config(path)  # token ids checked; errors name the field
    if gen:
        model.generation_config = gen
    model.eval()
    return model


__all__ = ["load_pretrained", "load_hf_weights", "linear_weight_names", "quantized_modules",
           "native_tensors", "checkpoint_keys", "Prepare"]
