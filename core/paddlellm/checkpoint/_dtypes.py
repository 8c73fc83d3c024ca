"""Dtype names, storage dtypes and exact bfloat16 / float8 conversions in NumPy.

NumPy has no bfloat16: bfloat16 data is carried as its raw ``uint16`` bit pattern
("bits"), widened to float32 exactly by a 16-bit shift and narrowed with round-to-nearest-even
(the rounding torch and Paddle use).
"""
from __future__ import annotations

import numpy as np

# Canonical dtype name -> NumPy dtype of the stored bits (bfloat16 / float8 as raw integers).
STORAGE_NUMPY: dict[str, np.dtype] = {
    "float64": np.dtype("<f8"),
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "bfloat16": np.dtype("<u2"),
    "float8_e4m3fn": np.dtype("u1"),
    "float8_e5m2": np.dtype("u1"),
    "int64": np.dtype("<i8"),
    "int32": np.dtype("<i4"),
    "int16": np.dtype("<i2"),
    "int8": np.dtype("i1"),
    "uint64": np.dtype("<u8"),
    "uint32": np.dtype("<u4"),
    "uint16": np.dtype("<u2"),
    "uint8": np.dtype("u1"),
    "bool": np.dtype("?"),
}

# safetensors header codes <-> canonical names.
SAFETENSORS_TO_NAME = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
    "U64": "uint64", "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}
NAME_TO_SAFETENSORS = {v: k for k, v in SAFETENSORS_TO_NAME.items()}

# Dtypes NumPy cannot hold natively: get_numpy widens them to float32.
WIDENED = {"bfloat16", "float8_e4m3fn", "float8_e5m2"}
FLOATING = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}

_ALIASES = {
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16", "fp64": "float64", "double": "float64",
}


def canonical_dtype(dtype) -> str:
    """Normalise ``"bf16"``, ``np.float32``, ``paddle.bfloat16``, ``torch.float16``... to a name."""
    if isinstance(dtype, str):
        name = dtype
    elif isinstance(dtype, (np.dtype, type)):
        name = np.dtype(dtype).name
    else:  # paddle / torch dtype objects print as "paddle.float32" / "torch.float32"
        name = str(dtype)
    name = name.rsplit(".", 1)[-1].lower()
    name = _ALIASES.get(name, name)
    if name not in STORAGE_NUMPY:
        raise ValueError(f"unsupported dtype {dtype!r}; supported: {', '.join(sorted(STORAGE_NUMPY))}")
    return name


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact widening of bfloat16 bit patterns (``uint16``) to float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 to bfloat16 (nearest, ties to even; NaN stays NaN); returns ``uint16`` bits."""
    shape = np.shape(x)
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)  # (N,)
    u = x.view(np.uint32)
    rounded = ((u + (((u >> 16) & 1) + np.uint32(0x7FFF))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():  # the add above could carry a NaN's payload into the exponent/sign
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded.reshape(shape)


def _fp8_table(exp_bits: int, man_bits: int, bias: int, fn: bool) -> np.ndarray:
    """float32 value of every float8 bit pattern (OCP e4m3fn / e5m2)."""
    codes = np.arange(256, dtype=np.uint32)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exp = (codes >> man_bits) & ((1 << exp_bits) - 1)
    man = codes & ((1 << man_bits) - 1)
    normal = (1.0 + man / (1 << man_bits)) * np.power(2.0, exp.astype(np.float64) - bias)
    subnormal = (man / (1 << man_bits)) * 2.0 ** (1 - bias)
    value = sign * np.where(exp == 0, subnormal, normal)
    top = (1 << exp_bits) - 1
    if fn:  # e4m3fn: no infinities, only S.1111.111 is NaN
        value[(exp == top) & (man == (1 << man_bits) - 1)] = np.nan
    else:  # IEEE-like: top exponent is inf / NaN
        value[(exp == top) & (man == 0)] = sign[(exp == top) & (man == 0)] * np.inf
        value[(exp == top) & (man != 0)] = np.nan
    return value.astype(np.float32)


_FP8_TABLES: dict[str, np.ndarray] = {}


def float8_bits_to_float32(bits: np.ndarray, name: str) -> np.ndarray:
    """Exact widening of float8 bit patterns (``uint8``) to float32."""
    if name not in _FP8_TABLES:
        _FP8_TABLES[name] = (_fp8_table(4, 3, 7, True) if name == "float8_e4m3fn"
                             else _fp8_table(5, 2, 15, False))
    return _FP8_TABLES[name][np.asarray(bits, dtype=np.uint8)]


def widen(bits: np.ndarray, name: str) -> np.ndarray:
    """Storage bits of a NumPy-less dtype -> float32 (exact)."""
    if name == "bfloat16":
        return bf16_bits_to_float32(bits)
    return float8_bits_to_float32(bits, name)


def convert_storage(arr: np.ndarray, src: str, dst: str) -> np.ndarray:
    """Convert an array held in ``src``'s storage form to ``dst``'s storage form.

    Storage form: the NumPy dtype itself, or raw bits for bfloat16 / float8. Returns ``arr``
    unchanged when ``src == dst``. Narrowing to float8 is not supported.
    """
    if src == dst:
        return arr
    if src in WIDENED:
        arr, src = widen(arr, src), "float32"
        if src == dst:
            return arr
    if dst == "bfloat16":
        return float32_to_bf16_bits(arr.astype(np.float32, copy=False))
    if dst in WIDENED:
        raise ValueError(f"converting to {dst} is not supported")
    return arr.astype(STORAGE_NUMPY[dst])
