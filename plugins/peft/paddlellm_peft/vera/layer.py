"""The VeRA layer (Kopiczko et al., 2024; peft ``VERA``).

All adapted layers share two frozen random matrices, ``vera_A (r, max_in)`` and
``vera_B (max_out, r)`` (sized for the largest adapted layer; a layer uses the top-left
slices). Each layer trains only two vectors, ``lambda_d (r,)`` and ``lambda_b (out,)``::

    y = base(x) + lambda_b * ((lambda_d * (dropout(x) @ A[:, :in].T)) @ B[:out].T)

peft's update of the torch weight ``(out, in)`` is ``(lambda_b B) @ (lambda_d A)``.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn

from ..common import DeltaWeightMerge, layer_features

LEAVES = ("vera_lambda_b", "vera_lambda_d")


class VeraProjections:
    """The frozen shared ``A (r, max_in)`` and ``B (max_out, r)`` (one object per model)."""

    def __init__(self, A: paddle.Tensor, B: paddle.Tensor) -> None:
        self.A, self.B = A, B
        self.A.stop_gradient = True
        self.B.stop_gradient = True

    @classmethod
    def random(cls, r: int, max_in: int, max_out: int, seed: int,
               dtype: str = "float32") -> "VeraProjections":
        """Kaiming-uniform (gain sqrt(2), fan in) draws, A then B, as peft's ``_kaiming_init``
        does (same distribution; the numbers come from NumPy, not torch's generator)."""
        rng = np.random.default_rng(seed)

        def kaiming(rows: int, cols: int) -> paddle.Tensor:
            bound = math.sqrt(3.0) * math.sqrt(2.0) / math.sqrt(cols)
            return paddle.to_tensor(rng.uniform(-bound, bound, (rows, cols)).astype(np.float32),
                                    dtype=dtype)

        return cls(kaiming(r, max_in), kaiming(max_out, r))

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


class VeraLinear(DeltaWeightMerge, nn.Layer):
    """VeRA around one linear base layer (``adapter_enabled`` switches it off)."""

    method_label = "VeRA"

    def __init__(self, base: nn.Layer, projections: VeraProjections, *, r: int,
                 dropout: float = 0.0, d_initial: float = 0.1) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = layer_features(base)
        self.r = int(r)
        A, B = projections.A, projections.B
        if A.shape[0] < self.r or B.shape[1] < self.r:
            raise ValueError(f"VeRA projections have rank {A.shape[0]}, the layer needs {self.r}")
        if A.shape[1] < self.in_features or B.shape[0] < self.out_features:
            raise ValueError(f"VeRA projections (A {list(A.shape)}, B {list(B.shape)}) are too "
                             f"small for a {self.in_features} -> {self.out_features} layer")
        self.projections = projections  # shared, frozen, not a parameter of this layer
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.vera_dropout, self.d_initial = float(dropout), float(d_initial)
        self.adapter_enabled = True
        self.merged = False
        weight = getattr(base, "weight", None)
        dtype = weight.dtype if weight is not None else paddle.get_default_dtype()
        # peft's init: lambda_b = 0 (no update at start), lambda_d = d_initial
        self.vera_lambda_b = self.create_parameter(
            [self.out_features], dtype=dtype, default_initializer=nn.initializer.Constant(0.0))
        self.vera_lambda_d = self.create_parameter(
            [self.r], dtype=dtype, default_initializer=nn.initializer.Constant(d_initial))

    def _slices(self, dtype) -> tuple[paddle.Tensor, paddle.Tensor]:
        A = self.projections.A[: self.r, : self.in_features]  # (r, in)
        B = self.projections.B[: self.out_features, : self.r]  # (out, r)
        return A.astype(dtype), B.astype(dtype)

    def _update(self, x: paddle.Tensor) -> paddle.Tensor:
        """``(..., in) -> (..., out)``: the adapter's contribution."""
        dtype = self.vera_lambda_d.dtype
        A, B = self._slices(dtype)
        x = x.astype(dtype)
        if self.dropout is not None:
            x = self.dropout(x)
        h = paddle.matmul(x, A, transpose_y=True) * self.vera_lambda_d  # (..., r)
        return paddle.matmul(h, B, transpose_y=True) * self.vera_lambda_b  # (..., out)

    def delta_weight(self) -> paddle.Tensor:
        """peft's update in torch layout ``(out, in)``: ``(lambda_b B) @ (lambda_d A)``."""
        A, B = self._slices(self.vera_lambda_d.dtype)
        return paddle.matmul(self.vera_lambda_b.unsqueeze(-1) * B,
                             self.vera_lambda_d.unsqueeze(-1) * A)  # (out, in)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}"
