"""KV-cache layouts: how a model stores its keys and values, chosen by registered name.

A model names its layout in ``model.kv_cache_layout``; its ``new_cache`` (contiguous, for
``generate``), ``new_paged_cache`` (the serving engine's pool) and ``kv_cache_dtype`` (what
the engine budgets its pool by) ask that layout (:class:`paddlellm.interfaces.KVCacheLayout`).
Layouts are registered with the ``register_kv_cache_layouts`` hook; the core registers
``"float"`` (keys and values in the model's dtype), the quant plugin ``"int8_static"`` and
``"int8_dynamic"``. A quantizer switches a model's cache by setting the name.
"""
from __future__ import annotations

from typing import Any

#: the layout every model starts with
DEFAULT_KV_CACHE_LAYOUT = "float"


class FloatKVCacheLayout:
    """Keys and values stored in the dtype the model computes in."""

    name = DEFAULT_KV_CACHE_LAYOUT

    def storage_dtype(self, model: Any) -> str:
        return model.dtype

    def new_cache(self, model: Any, batch: int, max_length: int, dtype: str) -> Any:
        from .kv_cache import KVCache

        c = model.config
        return KVCache(c.num_layers, batch, max_length, c.num_kv_heads, c.head_dim, dtype)

    def new_paged_cache(self, model: Any, num_layers: int, num_blocks: int, block_size: int,
                        kv_heads: int, head_dim: int, dtype: str) -> Any:
        from .kv_manager import PagedKVCache

        return PagedKVCache(num_layers, num_blocks, block_size, kv_heads, head_dim, dtype)


FLOAT = FloatKVCacheLayout()


def get_kv_cache_layout(name: str) -> Any:
    """The registered layout ``name``; an unknown name lists the installed ones."""
    from ..plugin.manager import get_registry

    return get_registry().load("kv_cache_layout", name)
