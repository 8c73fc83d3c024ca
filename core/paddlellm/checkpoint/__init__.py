"""Checkpoint I/O in the Hugging Face layout, without PyTorch.

Reads ``model.safetensors``, sharded safetensors (``model.safetensors.index.json``) and
PyTorch ``pytorch_model.bin`` / sharded ``.bin`` lazily (mmapped; pickles through an
allow-list unpickler that executes nothing); writes safetensors that ``transformers`` loads.
Importing this package does not import Paddle.
"""
from __future__ import annotations

from .assign import assign_array
from ._dtypes import bf16_bits_to_float32, canonical_dtype, float32_to_bf16_bits
from ._errors import CheckpointError, CheckpointFormatError, CheckpointNotFoundError, UnsafeCheckpointError
from .convert import convert_checkpoint
from .loading import (checkpoint_keys, linear_weight_names, load_hf_weights, load_pretrained,
                      native_tensors, quantized_modules)
from .model_config import check_model_config, family_config, read_generation_config, read_model_config
from .saving import save_pretrained
from .reader import WEIGHT_FILES, CheckpointReader, read_json, resolve_weights
from .torch_io import load_torch_bin
from .writer import parse_size, save_state_dict

__all__ = [
    "CheckpointReader", "save_state_dict", "assign_array", "load_torch_bin", "read_json", "parse_size",
    "convert_checkpoint", "resolve_weights", "WEIGHT_FILES",
    "check_model_config", "family_config", "read_generation_config", "read_model_config",
    "CheckpointError", "CheckpointFormatError", "CheckpointNotFoundError", "UnsafeCheckpointError",
    "bf16_bits_to_float32", "float32_to_bf16_bits", "canonical_dtype",
    "load_pretrained", "load_hf_weights", "linear_weight_names", "quantized_modules",
    "native_tensors", "checkpoint_keys", "save_pretrained",
]
