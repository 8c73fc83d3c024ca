"""Spherical linear interpolation of two models (Shoemake 1985; mergekit's ``slerp``).

``t`` (0 -> the first/base model, 1 -> the second) may vary per tensor (gradients, filters).
Each whole tensor is interpolated as one vector (PaddleNLP's and mergekit's form). Nearly
collinear inputs (``|cos| > dot_threshold``) fall back to linear interpolation. The angle is measured between normalised copies, the result mixes the
unnormalised inputs.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import MergeError
from ..params import ParamSpec


def slerp(t: float, v0: np.ndarray, v1: np.ndarray, *, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> np.ndarray:
    """Interpolate ``v0`` -> ``v1`` at ``t`` along the great circle (float32 math)."""
    shape = v0.shape
    a, b = v0.reshape(1, -1), v1.reshape(1, -1)  # (1, n): the whole tensor is one vector
    a = a.astype(np.float32, copy=False)
    b = b.astype(np.float32, copy=False)
    na = np.linalg.norm(a, axis=1, keepdims=True)  # (1, 1)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    na = np.where(na > eps, na, np.float32(1))
    nb = np.where(nb > eps, nb, np.float32(1))
    dot = np.clip(np.sum((a / na) * (b / nb), axis=1, keepdims=True), -1.0, 1.0)  # (1, 1)
    linear = np.abs(dot) > dot_threshold
    theta = np.arccos(np.where(linear, 0.0, dot)).astype(np.float32)
    sin_theta = np.where(linear, 1.0, np.sin(theta)).astype(np.float32)
    t = np.float32(t)
    ca = np.where(linear, 1 - t, np.sin((1 - t) * theta) / sin_theta).astype(np.float32)
    cb = np.where(linear, t, np.sin(t * theta) / sin_theta).astype(np.float32)
    return (ca * a + cb * b).reshape(shape)


class SlerpMerge:
    """Two inputs; with a base model, the base is the ``t = 0`` end."""

    name = "slerp"
    needs_base = False
    param_specs = (
        ParamSpec("t", float, "shared", help="interpolation factor (0: first/base, 1: other)"),
        ParamSpec("dot_threshold", float, "shared", 0.9995, "collinearity threshold"),
        ParamSpec("eps", float, "shared", 1e-8, "norm threshold"),
    )

    def merge_tensor(self, name: str, tensors: list[np.ndarray], base: np.ndarray | None,
                     params: Mapping[str, Any]) -> np.ndarray:
        if base is not None:
            tensors = [base, *tensors]
        if len(tensors) != 2:
            raise MergeError(f"slerp merges exactly two models (got {len(tensors)})")
        return slerp(params["t"], tensors[0], tensors[1], dot_threshold=params["dot_threshold"],
                     eps=params["eps"])


SLERP = SlerpMerge()
