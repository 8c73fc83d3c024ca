"""The inference engine: paged KV cache, continuous batching, per-request sampling.

``from paddlellm.engine import LLMEngine, EngineConfig, SamplingParams, RequestOutput``;
numpy and Paddle are imported only when the engine itself is used (``EngineConfig`` needs
neither, so the command line reads it for ``--help``).
"""
from __future__ import annotations

from typing import Any

from .config import EngineConfig

__all__ = ["EngineConfig", "EngineThreadError", "LLMEngine", "RequestOutput", "SamplingParams",
           "default_model_path"]

_LAZY = {"LLMEngine": "llm_engine", "default_model_path": "llm_engine",
         "EngineThreadError": "ownership", "RequestOutput": "sampling",
         "SamplingParams": "sampling"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
