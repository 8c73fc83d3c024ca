"""NumPy <-> Paddle for checkpoint I/O; only imported when a Paddle tensor is involved."""
from __future__ import annotations

import numpy as np

from ._dtypes import STORAGE_NUMPY, canonical_dtype


def bits_to_paddle(arr: np.ndarray, dtype: str, place=None):
    """A storage-form array (bfloat16 as uint16 bits) -> ``paddle.Tensor`` of ``dtype``."""
    import paddle

    if dtype == "bfloat16":  # paddle takes uint16 data with dtype=bfloat16 as the raw bits
        return paddle.to_tensor(arr.view(np.uint16), dtype="bfloat16", place=place)
    if dtype in ("float8_e4m3fn", "float8_e5m2"):
        return paddle.to_tensor(arr.view(np.uint8), place=place).view(getattr(paddle, dtype))
    return paddle.to_tensor(arr, place=place)


def is_paddle_tensor(value) -> bool:
    return type(value).__module__.startswith("paddle") and hasattr(value, "numpy") and hasattr(value, "dtype")


def paddle_dtype_name(t) -> str:
    return canonical_dtype(str(t.dtype))


def paddle_to_storage(t) -> np.ndarray:
    """``paddle.Tensor`` -> storage-form NumPy array (bfloat16 / float8 as raw bits)."""
    name = paddle_dtype_name(t)
    if name in ("float8_e4m3fn", "float8_e5m2"):
        import paddle
        t = t.view(paddle.uint8)
    arr = t.numpy()  # paddle returns bfloat16 as its uint16 bits
    return np.ascontiguousarray(arr).view(STORAGE_NUMPY[name]).reshape(tuple(t.shape))
