"""Checkpoint I/O: the core's reader/writer, through ``paddlellm.api``.

Saving streams tensors through the writer's lazy ``TensorSource`` (one tensor in memory at a
time), which ``save_state_dict`` does not expose; ``write_sharded`` takes them.
"""
from __future__ import annotations

from paddlellm.api import (CheckpointReader, assign_array, canonical_dtype, family_config,  # noqa: F401
                            read_generation_config, read_json, save_state_dict)
from paddlellm.api import convert_storage  # noqa: F401
from paddlellm.api import TensorSource  # noqa: F401
from paddlellm.api import write_sharded  # noqa: F401
