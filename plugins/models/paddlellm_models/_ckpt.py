"""Checkpoint I/O: ``paddlellm.checkpoint`` (the core's reader/writer)."""
from __future__ import annotations

from paddlellm.checkpoint import CheckpointReader, read_json, save_state_dict  # noqa: F401
