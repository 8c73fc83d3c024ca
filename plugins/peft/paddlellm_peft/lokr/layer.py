"""The LoKr layer (LyCORIS / peft ``LOKR``): a Kronecker-product weight update.

``out = l * k``, ``in = m * n`` (:func:`factorization`); peft's update of the torch weight
``(out, in)`` is ``delta = (alpha / r) * kron(w1, w2)`` with ``w1 (l, m)`` and ``w2 (k, n)``.
Each factor is a full matrix (``lokr_w1``, ``lokr_w2``) or, when the rank is small against its
size, a product (``lokr_w1_a (l, r) @ lokr_w1_b (r, m)``, ``lokr_w2_a (k, r) @ lokr_w2_b
(r, n)``); ``w1`` is decomposed only with ``decompose_both``. Parameters are kept in peft's
(torch) shapes; Paddle's ``(in, out)`` update is ``delta.T``.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn

from ..common import DeltaWeightMerge, layer_features

#: peft's parameter names of a LoKr layer
LEAVES = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """``(m, n)`` with ``m * n = dimension``, ``m <= n``, ``m`` as close to ``factor`` (or to
    ``sqrt(dimension)`` with ``-1``) as LyCORIS/peft choose it."""
    if factor > 0 and dimension % factor == 0:
        return factor, dimension // factor
    if factor == -1:
        factor = dimension
    m, n = 1, dimension
    length = m + n
    while m < n:
        new_m = m + 1
        while dimension % new_m != 0:
            new_m += 1
        new_n = dimension // new_m
        if new_m + new_n > length or new_m > factor:
            break
        m, n = new_m, new_n
    if m > n:
        n, m = m, n
    return m, n


def factor_shapes(in_features: int, out_features: int, r: int, decompose_both: bool,
                  decompose_factor: int = -1) -> dict[str, list[int]]:
    """The peft parameter shapes of one LoKr layer, by leaf name."""
    m, n = factorization(in_features, decompose_factor)
    l, k = factorization(out_features, decompose_factor)
    shapes: dict[str, list[int]] = {}
    if decompose_both and r < max(l, m) / 2:
        shapes.update(lokr_w1_a=[l, r], lokr_w1_b=[r, m])
    else:
        shapes.update(lokr_w1=[l, m])
    if r < max(k, n) / 2:
        shapes.update(lokr_w2_a=[k, r], lokr_w2_b=[r, n])
    else:
        shapes.update(lokr_w2=[k, n])
    return shapes


def _kaiming(cols: int) -> nn.initializer.Initializer:
    """torch's ``kaiming_uniform_(a=sqrt(5))`` on a ``(rows, cols)`` tensor: U(+-1/sqrt(cols))."""
    bound = 1.0 / math.sqrt(cols)
    return nn.initializer.Uniform(-bound, bound)


class LoKrLinear(DeltaWeightMerge, nn.Layer):
    """``y = base(x) + x @ delta.T`` with peft's LoKr ``delta``; ``adapter_enabled`` switches
    the update off, ``merge``/``unmerge`` move it into/out of the base weight."""

    method_label = "LoKr"

    def __init__(self, base: nn.Layer, *, r: int, alpha: float, decompose_both: bool = False,
                 decompose_factor: int = -1, rank_dropout: float = 0.0,
                 module_dropout: float = 0.0, rank_dropout_scale: bool = False) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = layer_features(base)
        self.r, self.alpha = int(r), float(alpha)
        if self.r <= 0:
            raise ValueError(f"LoKr rank must be positive, got {r}")
        self.scaling = self.alpha / self.r
        self.decompose_both, self.decompose_factor = bool(decompose_both), int(decompose_factor)
        self.rank_dropout, self.module_dropout = float(rank_dropout), float(module_dropout)
        self.rank_dropout_scale = bool(rank_dropout_scale)
        self.adapter_enabled = True
        self.merged = False
        weight = getattr(base, "weight", None)
        dtype = weight.dtype if weight is not None else paddle.get_default_dtype()
        self.shapes = factor_shapes(self.in_features, self.out_features, self.r,
                                    self.decompose_both, self.decompose_factor)
        # peft's default init: w1 (or w1_a) zero, so the update starts at zero
        for leaf, shape in self.shapes.items():
            init = (nn.initializer.Constant(0.0) if leaf in ("lokr_w1", "lokr_w1_a")
                    else _kaiming(shape[1]))
            setattr(self, leaf, self.create_parameter(shape, dtype=dtype, default_initializer=init))

    def _factor(self, name: str) -> paddle.Tensor:
        if name in self.shapes:
            return getattr(self, name)
        return paddle.matmul(getattr(self, name + "_a"), getattr(self, name + "_b"))

    def delta_weight(self) -> paddle.Tensor:
        """peft's update in torch layout ``(out, in)``: ``scaling * kron(w1, w2)``."""
        w1, w2 = self._factor("lokr_w1"), self._factor("lokr_w2")  # (l, m), (k, n)
        return paddle.kron(w1, w2) * self.scaling  # (l*k, m*n) = (out, in)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.base_layer(x)  # (..., out)
        if self.merged:  # the base weight holds the update
            return self._merged_output(x, y)
        if not self.adapter_enabled:
            return y
        if self.training and self.module_dropout and float(paddle.rand([1])) < self.module_dropout:
            return y
        delta = self.delta_weight()  # (out, in)
        if self.training and self.rank_dropout:
            keep = (paddle.rand([self.out_features]) > self.rank_dropout).astype(delta.dtype)
            if self.rank_dropout_scale:
                keep = keep / keep.mean()
            delta = delta * keep.unsqueeze(-1)  # drop output rows, as peft
        return y + paddle.matmul(x.astype(delta.dtype), delta, transpose_y=True).astype(y.dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"alpha={self.alpha}, factors={ {k: v for k, v in self.shapes.items()} }")
