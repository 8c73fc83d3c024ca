"""``config.json`` of a checkpoint, read and checked before a model is built from it.

A model's size comes from its ``config.json``; a forged or mistyped value (``"hidden_size":
"big"``, ``"vocab_size": 10**12``, a negative layer count) must be an error naming the file
and the field, not a traceback from deep inside the model code or an attempt to allocate
terabytes. The limits are far above any published model; the loader also checks that the
parameter count the config implies is backed by the weights actually on disk.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ._errors import CheckpointFormatError, CheckpointNotFoundError

# field (and its aliases in other families) -> (smallest, largest) accepted integer
_SIZE_FIELDS: dict[str, tuple[int, int]] = {
    "vocab_size": (1, 2**24),
    "hidden_size": (1, 2**18), "n_embd": (1, 2**18), "d_model": (1, 2**18), "n_embed": (1, 2**18),
    "word_embed_proj_dim": (1, 2**18),
    "intermediate_size": (1, 2**20), "ffn_dim": (1, 2**20), "n_inner": (1, 2**20),
    "moe_intermediate_size": (1, 2**20), "shared_expert_intermediate_size": (0, 2**20),
    "num_hidden_layers": (1, 2**12), "n_layer": (1, 2**12), "num_layers": (1, 2**12),
    "num_attention_heads": (1, 2**12), "n_head": (1, 2**12),
    "num_key_value_heads": (1, 2**12), "head_dim": (1, 2**14),
    "max_position_embeddings": (1, 2**27), "n_positions": (1, 2**27), "seq_length": (1, 2**27),
    "sliding_window": (0, 2**27),
    "num_experts": (0, 2**14), "num_local_experts": (0, 2**14),
    "num_experts_per_tok": (0, 2**10),
}
_FLOAT_FIELDS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "rope_theta",
                 "initializer_range", "partial_rotary_factor")


def check_model_config(hf: Any, path: str | os.PathLike) -> dict:
    """``hf`` (the parsed ``config.json`` at ``path``) with its size fields checked: present
    size fields are integers in range (null is left to the family's default), float fields
    are finite numbers. Raises :class:`CheckpointFormatError` naming file and field."""
    if not isinstance(hf, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise CheckpointFormatError(f"{path}: field 'model_type' must be a string, got {model_type!r:.60}")
    for field, (low, high) in _SIZE_FIELDS.items():
        value = hf.get(field)
        if value is None:
            continue
        if type(value) is float and value.is_integer():  # 4096.0 written by some tools
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            raise CheckpointFormatError(
                f"{path}: field '{field}' must be an integer from {low} to {high}, got {value!r:.60}")
    for field in _FLOAT_FIELDS:
        value = hf.get(field)
        if value is None:
            continue
        if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
            raise CheckpointFormatError(
                f"{path}: field '{field}' must be a finite non-negative number, got {value!r:.60}")
    return hf


def read_model_config(directory: str | os.PathLike) -> dict:
    """The checked ``config.json`` of checkpoint ``directory`` (errors name the file/field)."""
    from .reader import read_json

    path = Path(directory) / "config.json"
    if not Path(directory).exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {directory} does not exist")
    if not path.is_file():
        raise CheckpointNotFoundError(f"no config.json in {directory}")
    return check_model_config(read_json(path), path)


GENERATION_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def read_generation_config(directory: str | os.PathLike) -> dict:
    """The token ids of ``generation_config.json`` in ``directory`` (``{}`` without one):
    each an id or a list of ids (non-negative integers below 2**31); errors name the file
    and the field."""
    from .reader import read_json

    path = Path(directory) / "generation_config.json"
    if not path.is_file():
        return {}
    gen = read_json(path)
    if not isinstance(gen, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object")
    out = {}
    for key in GENERATION_TOKEN_KEYS:
        value = gen.get(key)
        if value is None:
            continue
        ids = value if isinstance(value, list) else [value]
        if not ids or not all(type(i) is int and 0 <= i < 2**31 for i in ids):
            raise CheckpointFormatError(f"{path}: field '{key}' must be a token id or a list "
                                        f"of token ids, got {value!r:.60}")
        out[key] = value
    return out


def check_parameters_backed(num_parameters: int, weight_bytes: int,
                            path: str | os.PathLike) -> None:
    """The model a ``config.json`` describes is backed by the weights on disk: at most
    8 parameters per stored byte (1-bit quantization), so building it never allocates
    memory out of proportion to the checkpoint's real size."""
    if num_parameters > 8 * weight_bytes + 2**20:
        raise CheckpointFormatError(
            f"{path}: describes a model of {num_parameters:,} parameters but the checkpoint's "
            f"weights hold only {weight_bytes:,} bytes; the config (e.g. 'vocab_size', "
            "'hidden_size', 'num_hidden_layers') does not match the weights")


def family_config(family: Any, directory: str | os.PathLike):
    """``family.config_from_hf`` of checkpoint ``directory``'s checked ``config.json``, with
    the model it describes backed by the weights on disk (see
    :func:`check_parameters_backed`). Errors name the file and the field."""
    from ._dtypes import STORAGE_NUMPY
    from .reader import CheckpointReader

    path = Path(directory) / "config.json"
    hf = read_model_config(directory)
    try:
        config = family.config_from_hf(hf)
    except KeyError as exc:
        raise CheckpointFormatError(f"{path}: missing field {exc}") from None
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from None
    count = getattr(config, "num_parameters", None)
    if callable(count):
        with CheckpointReader(directory) as reader:
            stored = sum(math.prod(reader.shape(n)) * STORAGE_NUMPY[reader.dtype(n)].itemsize
                         for n in reader.keys())
        check_parameters_backed(count(), stored, path)
    return config
