"""Linear merging (model soups, Wortsman et al. 2022): a weighted average of the inputs."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..params import ParamSpec


class LinearMerge:
    """``sum_i w_i * x_i``, divided by ``sum_i w_i`` when ``normalize`` (the default)."""

    name = "linear"
    needs_base = False
    param_specs = (
        ParamSpec("weight", float, "input", help="relative weight of each model"),
        ParamSpec("normalize", bool, "shared", True, "divide by the sum of the weights"),
    )

    def chunkable(self, params: Mapping[str, Any]) -> bool:
        """Elementwise: row blocks merge independently."""
        return True

    def merge_tensor(self, name: str, tensors: list[np.ndarray], base: np.ndarray | None,
                     params: Mapping[str, Any]) -> np.ndarray:
        weights = params["weight"]
        out = np.zeros(tensors[0].shape, dtype=np.float32)  # same shape as every input
        for w, x in zip(weights, tensors):
            out += np.float32(w) * x
        if params.get("normalize", True):
            total = float(np.sum(np.asarray(weights, dtype=np.float32)))
            if abs(total) < 1e-8:
                raise ValueError(f"linear: weights of {name} sum to zero; cannot normalize")
            out /= np.float32(total)
        return out


LINEAR = LinearMerge()
