"""Spherical linear interpolation of two models (Shoemake 1985; mergekit's ``slerp``).

``t`` (0 -> the first/base model, 1 -> the second) may vary per tensor (gradients, filters).
Each whole tensor is interpolated as one vector (PaddleNLP's and mergekit's form): with
``cos = <v0, v1> / (|v0| |v1|)`` and ``theta = acos(cos)``, the result is
``sin((1 - t) theta) / sin(theta) * v0 + sin(t theta) / sin(theta) * v1``; nearly collinear
inputs (``|cos| > dot_threshold``) fall back to ``(1 - t) v0 + t v1``. Norms below ``eps``
count as 1. Large tensors are merged in row blocks after a first pass over the blocks
accumulates the two norms and the dot product (float64).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from ..errors import MergeError
from ..params import ParamSpec


def slerp_coefficients(t: float, aa: float, bb: float, ab: float, *,
                       dot_threshold: float = 0.9995, eps: float = 1e-8) -> tuple[float, float]:
    """``(c0, c1)`` with ``slerp = c0 * v0 + c1 * v1``, from ``|v0|^2``, ``|v1|^2``, ``<v0, v1>``."""
    na, nb = math.sqrt(aa), math.sqrt(bb)
    na = na if na > eps else 1.0
    nb = nb if nb > eps else 1.0
    cos = min(1.0, max(-1.0, ab / (na * nb)))
    if abs(cos) > dot_threshold:
        return 1.0 - t, t
    theta = math.acos(cos)
    return math.sin((1 - t) * theta) / math.sin(theta), math.sin(t * theta) / math.sin(theta)


def _sums(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    a = a.reshape(-1).astype(np.float64)
    b = b.reshape(-1).astype(np.float64)
    return float(a @ a), float(b @ b), float(a @ b)


def slerp(t: float, v0: np.ndarray, v1: np.ndarray, *, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> np.ndarray:
    """Interpolate ``v0`` -> ``v1`` at ``t`` along the great circle (float32 result)."""
    c0, c1 = slerp_coefficients(t, *_sums(v0, v1), dot_threshold=dot_threshold, eps=eps)
    return np.float32(c0) * v0.astype(np.float32, copy=False) + np.float32(c1) * v1.astype(
        np.float32, copy=False)


class SlerpMerge:
    """Two inputs; with a base model, the base is the ``t = 0`` end."""

    name = "slerp"
    needs_base = False
    param_specs = (
        ParamSpec("t", float, "shared", help="interpolation factor (0: first/base, 1: other)"),
        ParamSpec("dot_threshold", float, "shared", 0.9995, "collinearity threshold"),
        ParamSpec("eps", float, "shared", 1e-8, "norm threshold"),
    )

    def chunkable(self, params: Mapping[str, Any]) -> bool:
        return True

    def prepare(self, name: str, params: Mapping[str, Any], bounds: list[tuple[int, int]],
                read) -> dict:
        """First pass over row blocks: the global norms and dot product -> coefficients."""
        aa = bb = ab = 0.0
        for r0, r1 in bounds:
            (a, b), _ = read(r0, r1)
            s = _sums(a, b)
            aa, bb, ab = aa + s[0], bb + s[1], ab + s[2]
        coef = slerp_coefficients(params["t"], aa, bb, ab, dot_threshold=params["dot_threshold"],
                                  eps=params["eps"])
        return {**params, "_coefficients": coef}

    def merge_tensor(self, name: str, tensors: list[np.ndarray], base: np.ndarray | None,
                     params: Mapping[str, Any]) -> np.ndarray:
        if base is not None:
            tensors = [base, *tensors]
        if len(tensors) != 2:
            raise MergeError(f"slerp merges exactly two models (got {len(tensors)})")
        if "_coefficients" in params:  # one row block of a large tensor
            c0, c1 = params["_coefficients"]
            return np.float32(c0) * tensors[0] + np.float32(c1) * tensors[1]
        return slerp(params["t"], tensors[0], tensors[1], dot_threshold=params["dot_threshold"],
                     eps=params["eps"])


SLERP = SlerpMerge()
