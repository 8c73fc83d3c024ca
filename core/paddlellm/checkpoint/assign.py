"""Copying a NumPy array read from a checkpoint into a Paddle parameter or buffer."""
from __future__ import annotations

from typing import Any

import numpy as np


def assign_array(target: Any, array: np.ndarray, name: str) -> None:
    """Copy ``array`` into the tensor ``target`` in place, cast to its dtype; a shape mismatch
    is a ``ValueError`` naming ``name`` and both shapes."""
    import paddle

    if tuple(target.shape) != tuple(array.shape):
        raise ValueError(f"shape mismatch for '{name}': checkpoint {tuple(array.shape)}, "
                         f"model {tuple(target.shape)}")
    value = paddle.to_tensor(np.ascontiguousarray(array))
    if value.dtype != target.dtype:
        value = value.astype(target.dtype)
    target.set_value(value)
