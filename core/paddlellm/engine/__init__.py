"""The inference engine: paged KV cache, continuous batching, per-request sampling.

``from paddlellm.engine import LLMEngine, SamplingParams, RequestOutput``; Paddle is imported
only when the engine itself is used.
"""
from __future__ import annotations

from typing import Any

from .sampling import RequestOutput, SamplingParams

__all__ = ["LLMEngine", "RequestOutput", "SamplingParams", "default_model_path"]


def __getattr__(name: str) -> Any:
    if name in ("LLMEngine", "default_model_path"):
        from . import llm_engine

        return getattr(llm_engine, name)
    raise AttributeError(name)
