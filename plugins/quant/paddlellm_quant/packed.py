"""GPTQ and AWQ checkpoints in their published layouts, and layers that compute with them.

What ``transformers``, vLLM and the AutoGPTQ/GPTQModel and AutoAWQ tool families store for a
quantized ``nn.Linear`` of ``in`` inputs and ``out`` outputs (``bits`` = 4 or 8, ``k = 32 /
bits`` values per int32, ``G`` groups of input columns; value ``j`` of a word sits in bits
``[j * bits, (j + 1) * bits)``; integers are unsigned, ``w = (q - zero) * scale``):

**GPTQ** (``quant_method: "gptq"``)

* ``qweight`` int32 ``(in / k, out)``: packed along the **input** dimension, word ``r`` of
  column ``o`` holds input rows ``r * k ... r * k + k - 1`` in order.
* ``qzeros`` int32 ``(G, out / k)``: packed along the **output** dimension, in order. Format
  v1 (``checkpoint_format: "gptq"``, what AutoGPTQ writes and every reader expects by
  default) stores ``zero - 1`` (readers add 1 back); ``"gptq_v2"`` stores ``zero``.
* ``scales`` float16 ``(G, out)``; ``g_idx`` int32 ``(in,)``: the group of each input row
  (``desc_act``/act-order checkpoints may permute it); ``bias`` ``(out,)`` when present.
* Symmetric quantization (``sym: true``) stores ``zero = 2**(bits - 1)``.

**AWQ, GEMM version** (``quant_method: "awq"``, ``version: "gemm"``, 4 bits only)

* ``qweight`` int32 ``(in, out / 8)`` and ``qzeros`` int32 ``(G, out / 8)``: packed along the
  **output** dimension in AWQ's interleaved order: bits ``[4j, 4j + 4)`` of word ``c`` hold
  output column ``8c + [0, 2, 4, 6, 1, 3, 5, 7][j]``; zeros are stored as they are.
* ``scales`` float16 ``(G, out)`` with ``G = in / group_size``; no ``g_idx``.

:class:`GPTQLinear` and :class:`AWQLinear` hold exactly these tensors (under these names, so a
checkpoint loads into them one to one) and dequantize for the matmul.
"""
from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import paddle
import paddle.nn as nn

from .layers import QuantizedLayer, group_index

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
#: inverse permutation: natural column ``m`` of a word sits in slot ``AWQ_REVERSE_ORDER[m]``
AWQ_REVERSE_ORDER = tuple(int(i) for i in np.argsort(AWQ_ORDER))
GPTQ_FORMATS = ("gptq", "gptq_v2")


class PackedLayoutError(ValueError):
    pass


def per_word(bits: int) -> int:
    if bits not in (2, 4, 8):
        raise PackedLayoutError(f"packed int32 layouts hold 2, 4 or 8 bits per value, got {bits}")
    return 32 // bits


# --- NumPy packing ---------------------------------------------------------------------------

def pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned ``(n, m)`` -> int32 ``(n / k, m)``, ``k`` consecutive rows per word, in order."""
    k = per_word(bits)
    n, m = values.shape
    if n % k:
        raise PackedLayoutError(f"{n} rows cannot be packed {k} per int32")
    v = values.astype(np.uint32).reshape(n // k, k, m)
    shifts = (np.arange(k, dtype=np.uint32) * bits)[None, :, None]
    return np.bitwise_or.reduce(v << shifts, axis=1).view(np.int32)


def unpack_rows(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`: int32 ``(n / k, m)`` -> int64 ``(n, m)``."""
    k = per_word(bits)
    p = packed.view(np.uint32)[:, None, :]  # (n/k, 1, m)
    shifts = (np.arange(k, dtype=np.uint32) * bits)[None, :, None]
    v = (p >> shifts) & np.uint32(2**bits - 1)  # (n/k, k, m)
    return v.reshape(-1, packed.shape[1]).astype(np.int64)


def pack_cols(values: np.ndarray, bits: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """Unsigned ``(n, m)`` -> int32 ``(n, m / k)``; slot ``j`` of word ``c`` holds column
    ``c * k + order[j]`` (``order`` defaults to ``0 .. k-1``)."""
    k = per_word(bits)
    n, m = values.shape
    if m % k:
        raise PackedLayoutError(f"{m} columns cannot be packed {k} per int32")
    v = values.astype(np.uint32).reshape(n, m // k, k)
    if order is not None:
        v = v[:, :, list(order)]
    shifts = (np.arange(k, dtype=np.uint32) * bits)[None, None, :]
    return np.bitwise_or.reduce(v << shifts, axis=2).view(np.int32)


def unpack_cols(packed: np.ndarray, bits: int, order: tuple[int, ...] | None = None) -> np.ndarray:
    """Inverse of :func:`pack_cols`: int32 ``(n, m / k)`` -> int64 ``(n, m)``."""
    k = per_word(bits)
    p = packed.view(np.uint32)[:, :, None]
    shifts = (np.arange(k, dtype=np.uint32) * bits)[None, None, :]
    v = (p >> shifts) & np.uint32(2**bits - 1)  # (n, m/k, k): slot j
    if order is not None:
        v = v[:, :, [order.index(c) for c in range(k)]]  # slot of natural column c
    return v.reshape(packed.shape[0], -1).astype(np.int64)


def gptq_tensors(q: np.ndarray, scales: np.ndarray, bits: int, g_idx: np.ndarray,
                 checkpoint_format: str = "gptq") -> dict[str, np.ndarray]:
    """Signed symmetric ints ``q (out, in)`` and ``scales (out, G)`` -> GPTQ tensors
    (``qweight``, ``qzeros``, ``scales``, ``g_idx``)."""
    zero = 2 ** (bits - 1)
    qu = q.astype(np.int64) + zero  # (out, in) in [0, 2**bits)
    G = scales.shape[1]
    stored_zero = zero - 1 if checkpoint_format == "gptq" else zero
    return {"qweight": pack_rows(qu.T, bits),
            "qzeros": pack_cols(np.full((G, q.shape[0]), stored_zero, np.int64), bits),
            "scales": np.ascontiguousarray(scales.T).astype(np.float16),
            "g_idx": np.asarray(g_idx, np.int32)}


def awq_tensors(q: np.ndarray, scales: np.ndarray, bits: int = 4) -> dict[str, np.ndarray]:
    """Signed symmetric ints ``q (out, in)`` and ``scales (out, G)`` -> AWQ GEMM tensors
    (``qweight``, ``qzeros``, ``scales``); the symmetric grid is stored with zero ``2**(bits-1)``."""
    zero = 2 ** (bits - 1)
    qu = q.astype(np.int64) + zero
    G = scales.shape[1]
    return {"qweight": pack_cols(np.ascontiguousarray(qu.T), bits, AWQ_ORDER),
            "qzeros": pack_cols(np.full((G, q.shape[0]), zero, np.int64), bits, AWQ_ORDER),
            "scales": np.ascontiguousarray(scales.T).astype(np.float16)}


# --- layers ----------------------------------------------------------------------------------

_SHIFTS: dict[tuple, paddle.Tensor] = {}


def _shifts(bits: int, shape: list[int]) -> paddle.Tensor:
    key = (bits, tuple(shape), str(paddle.get_device()))
    if key not in _SHIFTS:
        k = 32 // bits
        _SHIFTS[key] = paddle.to_tensor((np.arange(k, dtype=np.int32) * bits).reshape(shape))
    return _SHIFTS[key]


def _nibble_tables(offset: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``(256, 1)`` float32 tables: a byte's low / high nibble minus ``offset``."""
    key = ("nibble_tables", offset, str(paddle.get_device()))
    if key not in _SHIFTS:
        b = np.arange(256, dtype=np.float32)
        _SHIFTS[key] = (paddle.to_tensor(((b % 16) - offset)[:, None]),
                        paddle.to_tensor(((b // 16) - offset)[:, None]))
    return _SHIFTS[key]


def _nibbles(raw: paddle.Tensor, axis: int, offset: int = 0) -> paddle.Tensor:
    """uint8 bytes -> float32 nibbles (minus ``offset``), low and high stacked at ``axis``:
    two table lookups (the reordering happens on the bytes, 1/8 of the output's size)."""
    lo_t, hi_t = _nibble_tables(offset)
    idx = raw.astype("int64")
    shape = list(raw.shape)
    lo = nn.functional.embedding(idx, lo_t).reshape(shape)
    hi = nn.functional.embedding(idx, hi_t).reshape(shape)
    return paddle.stack([lo, hi], axis=axis)


def _unpack_rows_t(packed: paddle.Tensor, bits: int, offset: int = 0) -> paddle.Tensor:
    """int32 ``(n / k, m)`` -> float32 ``(n, m)`` minus ``offset`` (GPTQ ``qweight``)."""
    if bits == 4:  # bytes (n/8, m, 4) -> (n/8, 4, m); nibble j = 2 * byte + (0 low, 1 high)
        a, m = packed.shape
        raw = packed.view(paddle.uint8).reshape([a, m, 4]).transpose([0, 2, 1])  # (n/8, 4, m)
        return _nibbles(raw, axis=2, offset=offset).reshape([a * 8, m])  # (n/8, 4, 2, m)
    k = 32 // bits
    v = paddle.bitwise_right_shift(packed.unsqueeze(1), _shifts(bits, [1, k, 1]))  # (n/k, k, m)
    v = paddle.bitwise_and(v, paddle.full([1], 2**bits - 1, "int32"))
    return v.reshape([-1, packed.shape[1]]).astype("float32") - offset


def _unpack_cols_t(packed: paddle.Tensor, bits: int, order: tuple[int, ...] | None = None) -> paddle.Tensor:
    """int32 ``(n, m / k)`` -> int32 ``(n, m)`` (``qzeros``; AWQ ``qweight``)."""
    k = 32 // bits
    v = paddle.bitwise_right_shift(packed.unsqueeze(2), _shifts(bits, [1, 1, k]))  # (n, m/k, k)
    v = paddle.bitwise_and(v, paddle.full([1], 2**bits - 1, "int32"))
    if order is not None:
        v = paddle.index_select(v, paddle.to_tensor([order.index(c) for c in range(k)]), axis=2)
    return v.reshape([packed.shape[0], -1])


class PackedLinear(QuantizedLayer):
    """Shared part of :class:`GPTQLinear` and :class:`AWQLinear`: ``y = x @ W + bias`` with
    ``W (in, out) = (q - zero[g]) * scale[g]`` dequantized on the fly (the float weight exists
    only during the call)."""

    layout: ClassVar[str] = ""
    #: checkpoint tensors a loader may find absent (the layer then keeps its default)
    optional_tensors: ClassVar[tuple[str, ...]] = ()

    def __init__(self, in_features: int, out_features: int, *, bits: int, group_size: int,
                 bias: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bits, self.group_size = int(bits), int(group_size)
        self._dtype = str(dtype).replace("paddle.", "")
        self.n_groups = self._groups()
        if bias:
            self.bias = self.create_parameter([self.out_features], dtype=self._dtype, is_bias=True,
                                              default_initializer=nn.initializer.Constant(0.0))
        else:
            self.bias = None

    def _groups(self) -> int:
        gs = self.group_size if self.group_size > 0 else self.in_features
        return math.ceil(self.in_features / gs)

    def _check(self, dim: str, n: int, k: int) -> None:
        if n % k:
            raise PackedLayoutError(f"{self.layout}: {dim} = {n} is not a multiple of {k} "
                                    f"({self.bits}-bit values packed {k} per int32)")

    # subclasses: int weight (in, out) minus ``offset``, zeros (G, out), group of each input row (in,)
    def int_weight_t(self, offset: int = 0) -> paddle.Tensor:
        raise NotImplementedError

    def zeros_t(self) -> paddle.Tensor:
        raise NotImplementedError

    def group_rows_t(self) -> paddle.Tensor:
        raise NotImplementedError

    def reset_cache(self) -> None:
        """Forget what :meth:`plain_group_size` / :meth:`uniform_zero` decided (call after
        changing the tensors in place; the checkpoint loader does)."""
        for key in ("_plain", "_zero"):
            self.__dict__.pop(key, None)

    def plain_group_size(self) -> int | None:
        """``group_size`` when input row ``i`` belongs to group ``i // group_size`` and the
        groups are equal (the common case: a reshape instead of two gathers), else ``None``.
        Decided on first use (after the checkpoint's tensors were loaded)."""
        if getattr(self, "_plain", "unset") == "unset":
            gs = self.group_size if 0 < self.group_size < self.in_features else self.in_features
            g = self.group_rows_t().numpy()
            plain = self.in_features % gs == 0 and np.array_equal(g, np.arange(self.in_features) // gs)
            object.__setattr__(self, "_plain", gs if plain else None)
        return self._plain

    def uniform_zero(self) -> int | None:
        """The zero point when every group and column has the same one (symmetric
        checkpoints: ``2**(bits-1)``), folded into the unpacking; decided on first use."""
        if getattr(self, "_zero", "unset") == "unset":
            z = self.zeros_t().numpy()
            object.__setattr__(self, "_zero", int(z.flat[0]) if z.size and (z == z.flat[0]).all() else None)
        return self._zero

    def dequantize_weight(self, dtype: str | None = None) -> paddle.Tensor:
        """The float weight ``(in, out)`` (``nn.Linear``'s layout)."""
        dtype = dtype or self._dtype
        # float32 arithmetic (float16 scales are exact in it), one rounding to ``dtype`` at the end
        zero = self.uniform_zero()
        q = self.int_weight_t(zero or 0).astype("float32")  # (in, out), minus a uniform zero
        zeros, scales = self.zeros_t().astype("float32"), self.scales.astype("float32")  # (G, out)
        gs = self.plain_group_size()
        if gs is not None and zero is not None:  # (G, gs, out) * (G, 1, out)
            G = self.in_features // gs
            w = (q.reshape([G, gs, self.out_features]) * scales.unsqueeze(1)).reshape(
                [self.in_features, self.out_features])
        elif gs is not None:  # (G, gs, out) - (G, 1, out)
            G = self.in_features // gs
            w = (q.reshape([G, gs, self.out_features]) - zeros.unsqueeze(1)) * scales.unsqueeze(1)
            w = w.reshape([self.in_features, self.out_features])
        else:
            g = self.group_rows_t()  # (in,)
            if zero is None:
                q = q - paddle.index_select(zeros, g, axis=0)
            w = q * paddle.index_select(scales, g, axis=0)
        return w if dtype == "float32" else w.astype(dtype)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        dtype = str(x.dtype).replace("paddle.", "")
        y = paddle.matmul(x, self.dequantize_weight(dtype))  # (..., out)
        return y if self.bias is None else y + self.bias.astype(y.dtype)

    def extra_repr(self) -> str:
        return (f"{self.layout}: in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}, bias={self.bias is not None}")


class GPTQLinear(PackedLinear):
    """A linear layer in the GPTQ layout (see the module docstring): buffers ``qweight``,
    ``qzeros``, ``scales``, ``g_idx`` (+ ``bias``)."""

    layout = "gptq"
    optional_tensors = ("g_idx",)

    def __init__(self, in_features: int, out_features: int, *, bits: int = 4, group_size: int = 128,
                 bias: bool = False, dtype: str = "float32", checkpoint_format: str = "gptq") -> None:
        super().__init__(in_features, out_features, bits=bits, group_size=group_size, bias=bias,
                         dtype=dtype)
        if checkpoint_format not in GPTQ_FORMATS:
            raise PackedLayoutError(f"gptq checkpoint_format must be one of {', '.join(GPTQ_FORMATS)}, "
                                    f"got '{checkpoint_format}'")
        self.checkpoint_format = checkpoint_format
        k = per_word(bits)
        self._check("in_features", self.in_features, k)
        self._check("out_features", self.out_features, k)
        self.register_buffer("qweight", paddle.zeros([self.in_features // k, self.out_features], "int32"))
        self.register_buffer("qzeros", paddle.zeros([self.n_groups, self.out_features // k], "int32"))
        self.register_buffer("scales", paddle.ones([self.n_groups, self.out_features], "float16"))
        gidx = group_index(self.in_features, self.group_size if self.group_size > 0 else -1)
        self.register_buffer("g_idx", paddle.to_tensor(gidx.astype(np.int32)))

    @classmethod
    def from_quantized(cls, q: np.ndarray, scales: np.ndarray, *, bits: int, group_size: int,
                       bias: paddle.Tensor | None = None, dtype: str = "float32") -> "GPTQLinear":
        """Symmetric signed ints ``q (out, in)`` and ``scales (out, G)`` (groups of consecutive
        input columns) as a GPTQ layer."""
        out, n = q.shape
        layer = cls(n, out, bits=bits, group_size=group_size, bias=bias is not None, dtype=dtype)
        gidx = group_index(n, group_size if group_size > 0 else -1)
        for key, value in gptq_tensors(q, scales, bits, gidx, layer.checkpoint_format).items():
            getattr(layer, key).set_value(paddle.to_tensor(value))
        if bias is not None:
            layer.bias.set_value(bias.astype(layer._dtype))
        return layer

    def int_weight_t(self, offset: int = 0) -> paddle.Tensor:
        return _unpack_rows_t(self.qweight, self.bits, offset)

    def zeros_t(self) -> paddle.Tensor:
        z = _unpack_cols_t(self.qzeros, self.bits)
        return z + 1 if self.checkpoint_format == "gptq" else z  # v1 stores zero - 1

    def group_rows_t(self) -> paddle.Tensor:
        g = self.g_idx.astype("int64")
        return g


class AWQLinear(PackedLinear):
    """A linear layer in AWQ's GEMM layout (see the module docstring): buffers ``qweight``,
    ``qzeros``, ``scales`` (+ ``bias``)."""

    layout = "awq"

    def __init__(self, in_features: int, out_features: int, *, bits: int = 4, group_size: int = 128,
                 bias: bool = False, dtype: str = "float32") -> None:
        if bits != 4:
            raise PackedLayoutError(f"AWQ's GEMM layout is 4-bit only, got bits={bits}")
        super().__init__(in_features, out_features, bits=bits, group_size=group_size, bias=bias,
                         dtype=dtype)
        gs = self.group_size if self.group_size > 0 else self.in_features
        if self.in_features % gs:
            raise PackedLayoutError(f"awq: in_features = {self.in_features} is not a multiple of "
                                    f"group_size = {gs} (AWQ stores in / group_size groups)")
        k = per_word(bits)
        self._check("out_features", self.out_features, k)
        self.register_buffer("qweight", paddle.zeros([self.in_features, self.out_features // k], "int32"))
        self.register_buffer("qzeros", paddle.zeros([self.n_groups, self.out_features // k], "int32"))
        self.register_buffer("scales", paddle.ones([self.n_groups, self.out_features], "float16"))

    @classmethod
    def from_quantized(cls, q: np.ndarray, scales: np.ndarray, *, group_size: int, bits: int = 4,
                       bias: paddle.Tensor | None = None, dtype: str = "float32") -> "AWQLinear":
        out, n = q.shape
        layer = cls(n, out, bits=bits, group_size=group_size, bias=bias is not None, dtype=dtype)
        for key, value in awq_tensors(q, scales, bits).items():
            getattr(layer, key).set_value(paddle.to_tensor(value))
        if bias is not None:
            layer.bias.set_value(bias.astype(layer._dtype))
        return layer

    def int_weight_t(self, offset: int = 0) -> paddle.Tensor:
        if self.bits == 4:  # nibble n of byte b = 2 * hi + lo of a word is column 4 lo + 2 n + hi
            raw = self.qweight.view(paddle.uint8).reshape([self.in_features, -1, 2, 2])  # (in, out/8, hi, lo)
            raw = raw.transpose([0, 1, 3, 2])  # (in, out/8, lo, hi)
            v = _nibbles(raw, axis=3, offset=offset)  # (in, out/8, lo, n, hi)
            return v.reshape([self.in_features, self.out_features])
        return _unpack_cols_t(self.qweight, self.bits, AWQ_ORDER).astype("float32") - offset

    def zeros_t(self) -> paddle.Tensor:
        return _unpack_cols_t(self.qzeros, self.bits, AWQ_ORDER)

    def group_rows_t(self) -> paddle.Tensor:
        key = ("awq_groups", self.in_features, self.group_size, str(paddle.get_device()))
        if key not in _SHIFTS:
            gs = self.group_size if self.group_size > 0 else self.in_features
            _SHIFTS[key] = paddle.to_tensor(np.arange(self.in_features, dtype=np.int64) // gs)
        return _SHIFTS[key]
