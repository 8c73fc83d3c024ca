"""A contiguous, preallocated key/value cache (one buffer per layer).

Writing new keys is an in-place slice assignment, not a concatenation, so decoding does
not reallocate the cache every step. The paged cache of the serving engine lives with the
engine; both follow :class:`paddlellm.interfaces.KVCacheLayer`.
"""
from __future__ import annotations

import paddle


class LayerKVCache:
    """Keys and values of one layer: ``(B, max_length, Hkv, D)`` buffers and a length."""

    def __init__(self, batch: int, max_length: int, kv_heads: int, head_dim: int,
                 dtype: str = "float32") -> None:
        self.k = paddle.zeros([batch, max_length, kv_heads, head_dim], dtype=dtype)
        self.v = paddle.zeros([batch, max_length, kv_heads, head_dim], dtype=dtype)
        self.length = 0

    @property
    def max_length(self) -> int:
        return self.k.shape[1]

    def __len__(self) -> int:
        return self.length

    def update(self, k: paddle.Tensor, v: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        start, end = self.length, self.length + k.shape[1]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_length}")
        self.k[:, start:end] = k.astype(self.k.dtype)
        self.v[:, start:end] = v.astype(self.v.dtype)
        self.length = end
        return self.k[:, :end], self.v[:, :end]

    def reorder(self, index: paddle.Tensor) -> None:
        """Keep batch rows ``index`` (beam search)."""
        self.k = paddle.index_select(self.k, index, axis=0)
        self.v = paddle.index_select(self.v, index, axis=0)

    def crop(self, length: int) -> None:
        """Forget positions from ``length`` on (speculative decoding rollback)."""
        self.length = min(self.length, length)


class KVCache:
    """One :class:`LayerKVCache` per layer."""

    def __init__(self, num_layers: int, batch: int, max_length: int, kv_heads: int,
                 head_dim: int, dtype: str = "float32") -> None:
        self.layers = [LayerKVCache(batch, max_length, kv_heads, head_dim, dtype)
                       for _ in range(num_layers)]

    def __getitem__(self, i: int) -> LayerKVCache:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def seq_length(self) -> int:
        return self.layers[0].length if self.layers else 0

    def reorder(self, index: paddle.Tensor) -> None:
        for layer in self.layers:
            layer.reorder(index)

    def crop(self, length: int) -> None:
        for layer in self.layers:
            layer.crop(length)
