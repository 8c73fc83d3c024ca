"""Checkpoint I/O: ``paddlellm.checkpoint`` (the core's reader/writer).

Saving streams tensors through the writer's lazy ``TensorSource`` (one tensor in memory at a
time), which ``save_state_dict`` does not expose; those names come from its submodules.
"""
from __future__ import annotations

from paddlellm.checkpoint import (CheckpointReader, assign_array, canonical_dtype, family_config,  # noqa: F401
                                  linear_weight_names, load_hf_weights, load_pretrained,
                                  read_generation_config, read_json, save_state_dict)
from paddlellm.checkpoint._dtypes import convert_storage  # noqa: F401
from paddlellm.checkpoint.safetensors_io import TensorSource  # noqa: F401
from paddlellm.checkpoint.writer import write_sharded  # noqa: F401
