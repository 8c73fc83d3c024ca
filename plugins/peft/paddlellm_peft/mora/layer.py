"""The MoRA layer (Jiang et al., 2024, "MoRA: High-Rank Updating for Parameter-Efficient
Fine-Tuning"; the authors' reference implementation is ``kongds/MoRA``).

One trainable square matrix ``M (r^, r^)`` per adapted linear ``in -> out``, between two
operators without parameters::

    y = base(x) + decompress(compress(dropout(x)) @ M^T)

``r^ = round(sqrt((in + out) * r))`` matches the parameter count of a rank-``r`` LoRA
(``r^2 ~ (in + out) r``); ``M`` starts at zero, so a fresh adapter is the base model.

* **type 1** (sharing, the paper's Eq. 6): the input, padded to a multiple of ``r^`` by
  repeating its first features, is cut into ``ceil(in / r^)`` chunks that are summed to one
  ``r^`` vector; ``M`` maps it to ``r^`` outputs, repeated ``ceil(out / r^)`` times and cut to
  ``out``.
* **type 6** (RoPE-based, Eq. 9): the padded input is cut into ``n = ceil(in / r^)`` chunks;
  chunk ``i`` is rotated as RoPE rotates position ``i`` (``x cos + rotate_half(x) sin`` with
  frequencies ``10000^(-2k / r^)``); ``M`` maps every chunk; the ``n r^`` outputs are
  concatenated, cut to ``out`` (or repeated when shorter). ``r^`` is made even.

Both maps are linear in ``x``, so the update is a dense ``delta W``: the map applied to the
identity. Merging adds it to the base weight.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn

from ..common import DeltaWeightMerge, layer_features

LEAF = "mora_M"


def mora_rank(in_features: int, out_features: int, r: int, mora_type: int) -> int:
    """``r^`` for a ``in -> out`` layer matching a rank-``r`` LoRA (the reference rounds)."""
    rank = int(math.sqrt((in_features + out_features) * r) + 0.5)
    if mora_type == 6:
        rank = rank // 2 * 2
    return max(rank, 2 if mora_type == 6 else 1)


class MoraLinear(DeltaWeightMerge, nn.Layer):
    """MoRA around one linear base layer (``adapter_enabled`` switches it off)."""

    method_label = "MoRA"

    def __init__(self, base: nn.Layer, *, r: int, mora_type: int = 6, dropout: float = 0.0,
                 rank: int | None = None) -> None:
        super().__init__()
        if mora_type not in (1, 6):
            raise ValueError(f"mora_type must be 1 or 6, got {mora_type}")
        self.base_layer = base
        self.in_features, self.out_features = layer_features(base)
        self.r, self.mora_type = int(r), int(mora_type)
        self.rank = int(rank) if rank is not None else mora_rank(
            self.in_features, self.out_features, self.r, self.mora_type)
        if self.mora_type == 6 and self.rank % 2:
            raise ValueError(f"MoRA type 6 needs an even square size, got {self.rank}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.mora_dropout = float(dropout)
        self.adapter_enabled = True
        self.merged = False
        self.chunks = -(-self.in_features // self.rank)  # ceil(in / r^)
        self.pad = self.chunks * self.rank - self.in_features
        weight = getattr(base, "weight", None)
        dtype = weight.dtype if weight is not None else paddle.get_default_dtype()
        # M in torch layout (out, in) = (r^, r^), zero: no update at start
        self.mora_M = self.create_parameter(
            [self.rank, self.rank], dtype=dtype, default_initializer=nn.initializer.Constant(0.0))
        if self.mora_type == 6:
            inv_freq = 1.0 / (10000 ** (np.arange(0, self.rank, 2, dtype=np.float64) / self.rank))
            freqs = np.outer(np.arange(self.chunks, dtype=np.float64), inv_freq)  # (n, r^/2)
            emb = np.concatenate([freqs, freqs], axis=-1)  # (n, r^)
            self.register_buffer("rope_cos", paddle.to_tensor(np.cos(emb).astype(np.float32)),
                                 persistable=False)
            self.register_buffer("rope_sin", paddle.to_tensor(np.sin(emb).astype(np.float32)),
                                 persistable=False)

    def _update(self, x: paddle.Tensor) -> paddle.Tensor:
        """``(..., in) -> (..., out)``: the adapter's contribution."""
        dtype = self.mora_M.dtype
        x = x.astype(dtype)
        if self.dropout is not None:
            x = self.dropout(x)
        lead = list(x.shape[:-1])
        if self.pad:  # repeat the first features up to a multiple of r^ (the reference's pad)
            x = paddle.concat([x, x[..., : self.pad]], axis=-1)
        chunks = x.reshape(lead + [self.chunks, self.rank])  # (..., n, r^)
        if self.mora_type == 1:
            h = paddle.matmul(chunks.sum(axis=-2), self.mora_M, transpose_y=True)  # (..., r^)
            times = -(-self.out_features // self.rank)
            out = paddle.concat([h] * times, axis=-1) if times > 1 else h
            return out[..., : self.out_features]
        half = self.rank // 2
        rotated = paddle.concat([-chunks[..., half:], chunks[..., :half]], axis=-1)
        cos, sin = self.rope_cos.astype(dtype), self.rope_sin.astype(dtype)
        chunks = chunks * cos + rotated * sin
        h = paddle.matmul(chunks, self.mora_M, transpose_y=True)  # (..., n, r^)
        flat = h.reshape(lead + [self.chunks * self.rank])[..., : self.out_features]
        width = flat.shape[-1]
        if width < self.out_features:
            times = -(-self.out_features // width)
            flat = paddle.concat([flat] * times, axis=-1)[..., : self.out_features]
        return flat

    def delta_weight(self) -> paddle.Tensor:
        """The update as a dense weight in torch layout ``(out, in)``: the (linear) map of
        the identity, without dropout."""
        dropout, self.dropout = self.dropout, None
        try:
            eye = paddle.eye(self.in_features, dtype=self.mora_M.dtype)  # (in, in)
            return self._update(eye).T  # (out, in)
        finally:
            self.dropout = dropout

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"square={self.rank}, type={self.mora_type}")
