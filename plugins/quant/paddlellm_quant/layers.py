"""Quantized linear layers and the integer math they store (symmetric, per-channel or group-wise).

Storage (what a checkpoint holds, key names ``{module}.{leaf}``):

* ``qweight``: int8 ``(out, in)`` for 8 bits; for 4 bits uint8 ``(out, ceil(in / 2))`` with two
  signed nibbles per byte: input column ``2j`` in the low nibble, ``2j + 1`` in the high one
  (two's complement, values in ``[-8, 7]``).
* ``scales``: ``(out, n_groups)`` in the model's float dtype; column ``c`` of row ``o``
  dequantizes to ``q[o, c] * scales[o, c // group_size]`` (``group_size = -1``: one group
  per output channel; a last, shorter group when ``group_size`` does not divide ``in``).
* ``pre_scale`` (optional, ``(in,)``): the input is multiplied by it before the matmul
  (AWQ stores ``1 / s`` here, so that ``Q(W * s)`` multiplies ``x / s``).
* ``bias`` (optional): a float parameter, as in ``nn.Linear``.

Forward on CPU asks the core's ``linear_kernel`` seam (:func:`paddlellm.modeling.linear.get_linear_kernel`)
for a compiled kernel (``paddlellm-kernels-cpu``: int8/int4 matrix-vector products read
straight from the integers) and otherwise dequantizes on the fly (the float weight exists
only during the call); on a GPU with a half-precision input, Paddle's ``weight_only_linear``
kernel runs on weights prepared once by ``weight_quantize`` (per-channel, or group size
64/128).
"""
from __future__ import annotations

import math
import warnings
from typing import ClassVar

import numpy as np
import paddle
import paddle.nn as nn

#: bits -> (lowest, highest) signed integer of the symmetric grid; scale = absmax / highest
INT_RANGE = {8: (-128, 127), 4: (-8, 7)}


# --- NumPy integer math (shared by RTN, GPTQ, AWQ) ---------------------------------------------

def check_bits(bits: int) -> int:
    if bits not in INT_RANGE:
        raise ValueError(f"bits must be one of {sorted(INT_RANGE)}, got {bits}")
    return bits


def num_groups(in_features: int, group_size: int) -> int:
    return 1 if group_size in (-1, 0) or group_size >= in_features else math.ceil(in_features / group_size)


def group_index(in_features: int, group_size: int) -> np.ndarray:
    """``(in,)`` the scale group of each input column."""
    if num_groups(in_features, group_size) == 1:
        return np.zeros(in_features, dtype=np.int64)
    return np.arange(in_features, dtype=np.int64) // group_size


def absmax_scales(w: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """``(out, in)`` float weight -> ``(out, n_groups)`` scales ``absmax / qmax`` (never 0)."""
    out, n = w.shape
    G = num_groups(n, group_size)
    g = n if G == 1 else group_size
    a = np.abs(w)
    if G * g != n:  # a shorter last group: pad with zeros (they never raise the max)
        a = np.pad(a, ((0, 0), (0, G * g - n)))
    amax = a.reshape(out, G, g).max(axis=-1).astype(np.float64)  # (out, G)
    amax = np.where(amax > 0, amax, 1.0)
    return (amax / INT_RANGE[check_bits(bits)][1]).astype(np.float32)


def quantize_with_scales(w: np.ndarray, scales: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    """``(out, in)`` float -> int8 ``(out, in)`` on the grid ``scales`` (round to nearest)."""
    lo, hi = INT_RANGE[check_bits(bits)]
    s = scales[:, group_index(w.shape[1], group_size)]  # (out, in)
    return np.clip(np.rint(w / s), lo, hi).astype(np.int8)


def dequantize_numpy(q: np.ndarray, scales: np.ndarray, group_size: int) -> np.ndarray:
    """int ``(out, in)`` + scales -> float32 ``(out, in)``."""
    return (q.astype(np.float32) * scales[:, group_index(q.shape[1], group_size)]).astype(np.float32)


def rtn_quantize(w: np.ndarray, bits: int, group_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Round-to-nearest: ``(out, in)`` float -> ``(int8 (out, in), scales (out, n_groups))``."""
    scales = absmax_scales(w, bits, group_size)
    return quantize_with_scales(w, scales, bits, group_size), scales


def pack_int4(q: np.ndarray) -> np.ndarray:
    """int8 ``(out, in)`` in ``[-8, 7]`` -> uint8 ``(out, ceil(in / 2))``, low nibble first."""
    if q.min(initial=0) < -8 or q.max(initial=0) > 7:
        raise ValueError("int4 values must lie in [-8, 7]")
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), q.dtype)], axis=1)
    nib = (q.astype(np.int16) & 0xF).astype(np.uint8)  # two's complement nibbles
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)


def unpack_int4(packed: np.ndarray, in_features: int) -> np.ndarray:
    """Inverse of :func:`pack_int4`: uint8 ``(out, ceil(in / 2))`` -> int8 ``(out, in)``."""
    lo = (packed & 0xF).astype(np.int16)
    hi = (packed >> 4).astype(np.int16)
    both = np.stack([lo, hi], axis=-1).reshape(packed.shape[0], -1)[:, :in_features]
    return np.where(both >= 8, both - 16, both).astype(np.int8)


_SHARED: dict[tuple, paddle.Tensor] = {}  # small constant tensors shared by all layers


def _nibble_table(dtype: str) -> paddle.Tensor:
    """``(256, 2)``: byte -> its (low, high) signed nibble values, for a one-op unpack."""
    key = ("nibbles", dtype, str(paddle.get_device()))
    if key not in _SHARED:
        b = np.arange(256)
        table = np.stack([b & 0xF, b >> 4], axis=1)
        _SHARED[key] = paddle.to_tensor(np.where(table >= 8, table - 16, table).astype(dtype))
    return _SHARED[key]


def _group_index_tensor(in_features: int, group_size: int) -> paddle.Tensor:
    key = ("groups", in_features, group_size, str(paddle.get_device()))
    if key not in _SHARED:
        _SHARED[key] = paddle.to_tensor(group_index(in_features, group_size))
    return _SHARED[key]


# --- layers ----------------------------------------------------------------------------------

class QuantizedLayer(nn.Layer):
    """Base of this plugin's quantized layers; declares the core's
    :class:`paddlellm.interfaces.QuantizedModule` marker.

    The core's checkpoint loader reads the persistable buffers and parameters of these
    layers by their own names (``model.layers.0.mlp.down_proj.qweight``); everything else goes
    through the model family's Hugging Face name map.
    """

    #: the QuantizedModule marker
    quantized: ClassVar[bool] = True
    #: stored precision in bits (of the weights)
    bits: int = 8
    #: tensors a checkpoint may lack
    optional_tensors: ClassVar[tuple[str, ...]] = ()


def _float_dtype(dtype) -> str:
    return str(dtype).replace("paddle.", "")


class WeightOnlyLinear(QuantizedLayer):
    """``y = (x * pre_scale) @ dequant(qweight, scales).T + bias`` with int8/int4 weights.

    Build from a float layer with :meth:`from_linear` (RTN) or :meth:`from_quantized` (integer
    weights computed elsewhere, e.g. by GPTQ); an empty layer (zeros) is what the checkpoint
    loader fills.
    """

    def __init__(self, in_features: int, out_features: int, *, bits: int = 8, group_size: int = -1,
                 bias: bool = False, pre_scale: bool = False, dtype: str = "float32") -> None:
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bits, self.group_size = check_bits(bits), int(group_size)
        self._dtype = _float_dtype(dtype)
        self.n_groups = num_groups(self.in_features, self.group_size)
        packed_cols = math.ceil(self.in_features / 2) if bits == 4 else self.in_features
        storage = "uint8" if bits == 4 else "int8"
        self.register_buffer("qweight", paddle.zeros([self.out_features, packed_cols], storage))
        self.register_buffer("scales", paddle.ones([self.out_features, self.n_groups], self._dtype))
        if pre_scale:
            self.register_buffer("pre_scale", paddle.ones([self.in_features], self._dtype))
        else:
            self.pre_scale = None
        if bias:
            self.bias = self.create_parameter([self.out_features], dtype=self._dtype, is_bias=True,
                                              default_initializer=nn.initializer.Constant(0.0))
        else:
            self.bias = None
        # (weight, scale) in the GPU kernel's layout, built on first use (kept out of the
        # state dict: a plain attribute, not a buffer)
        object.__setattr__(self, "_gpu_weights", None)
        # the compiled linear kernel chosen for this layer: ((dtype, place), kernel or None)
        object.__setattr__(self, "_kernel_cache", None)

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_quantized(cls, q: np.ndarray, scales: np.ndarray, *, bits: int, group_size: int,
                       bias: paddle.Tensor | None = None, pre_scale: np.ndarray | None = None,
                       dtype: str = "float32") -> "WeightOnlyLinear":
        """A layer holding int ``q (out, in)`` and ``scales (out, n_groups)``."""
        out, n = q.shape
        layer = cls(n, out, bits=bits, group_size=group_size, bias=bias is not None,
                    pre_scale=pre_scale is not None, dtype=dtype)
        layer.set_quantized(q, scales, pre_scale=pre_scale)
        if bias is not None:
            layer.bias.set_value(bias.astype(layer._dtype))
        return layer

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int, group_size: int = -1) -> "WeightOnlyLinear":
        """Round-to-nearest quantization of ``linear`` (weight ``(in, out)`` in Paddle)."""
        w = linear.weight.astype("float32").numpy().T  # (out, in)
        q, scales = rtn_quantize(w, bits, group_size)
        return cls.from_quantized(q, scales, bits=bits, group_size=group_size, bias=linear.bias,
                                  dtype=_float_dtype(linear.weight.dtype))

    def set_quantized(self, q: np.ndarray, scales: np.ndarray, pre_scale: np.ndarray | None = None) -> None:
        """Store int ``(out, in)`` values and their scales (packing int4)."""
        if tuple(q.shape) != (self.out_features, self.in_features):
            raise ValueError(f"quantized weight {q.shape} does not match ({self.out_features}, "
                             f"{self.in_features})")
        lo, hi = INT_RANGE[self.bits]
        if q.min() < lo or q.max() > hi:
            raise ValueError(f"{self.bits}-bit values must lie in [{lo}, {hi}]")
        stored = pack_int4(q) if self.bits == 4 else q.astype(np.int8)
        self.qweight.set_value(paddle.to_tensor(stored))
        self.scales.set_value(paddle.to_tensor(np.asarray(scales, np.float32)).astype(self._dtype))
        if pre_scale is not None:
            self.pre_scale.set_value(paddle.to_tensor(np.asarray(pre_scale, np.float32)).astype(self._dtype))
        object.__setattr__(self, "_gpu_weights", None)

    # -- integer view ----------------------------------------------------------------------
    def int_weight(self) -> np.ndarray:
        """The stored integers as int8 ``(out, in)`` (unpacked)."""
        raw = self.qweight.numpy()
        return unpack_int4(raw, self.in_features) if self.bits == 4 else raw.astype(np.int8)

    def dequantize(self, dtype: str | None = None) -> paddle.Tensor:
        """The float weight ``(out, in)`` (torch layout)."""
        dtype = dtype or self._dtype
        if self.bits == 4:
            ints = nn.functional.embedding(self.qweight.astype("int64"), _nibble_table(dtype))  # (out, in/2, 2)
            ints = ints.reshape([self.out_features, -1])[:, : self.in_features]  # (out, in)
        else:
            ints = self.qweight.astype(dtype)  # (out, in)
        scales = self.scales.astype(dtype)  # (out, G)
        if self.n_groups == 1:
            return ints * scales
        if self.in_features % self.group_size == 0:  # (out, G, g) * (out, G, 1)
            w = ints.reshape([self.out_features, self.n_groups, self.group_size]) * scales.unsqueeze(-1)
            return w.reshape([self.out_features, self.in_features])
        idx = _group_index_tensor(self.in_features, self.group_size)  # (in,)
        return ints * paddle.index_select(scales, idx, axis=1)  # (out, in)

    def dequantize_weight(self) -> paddle.Tensor:
        """The float weight ``(in, out)`` in ``nn.Linear``'s layout, with ``pre_scale`` folded
        in (what PEFT methods such as DoRA read from a quantized base)."""
        w = self.dequantize()  # (out, in)
        if self.pre_scale is not None:
            w = w * self.pre_scale.unsqueeze(0)
        return w.T  # (in, out)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.pre_scale is not None:
            x = x * self.pre_scale.astype(x.dtype)
        if _gpu_kernel_applies(x, self):
            y = self._forward_gpu(x)
            if y is not None:
                return y
        kernel = self._linear_kernel(x)
        if kernel is not None:
            y = kernel(x, self.qweight, self.scales, bits=self.bits, group_size=self.group_size)
            if y is not None:  # None: not this call (e.g. a prefill), use the Paddle path
                return y if self.bias is None else y + self.bias.astype(y.dtype)
        w = self.dequantize(_float_dtype(x.dtype))  # (out, in), lives only for this call
        y = paddle.matmul(x, w, transpose_y=True)  # (..., out)
        return y if self.bias is None else y + self.bias.astype(y.dtype)

    def _linear_kernel(self, x: paddle.Tensor):
        """A compiled kernel for this layer from the core's ``linear_kernel`` seam
        (:func:`paddlellm.modeling.linear.get_linear_kernel`), or None. Only where no gradient has to
        flow through the product (inference; a frozen base under QLoRA keeps Paddle math)."""
        if paddle.is_grad_enabled() and not x.stop_gradient:
            return None
        key = (_float_dtype(x.dtype), str(x.place))
        cached = self._kernel_cache
        if cached is None or cached[0] != key:
            from paddlellm.interfaces import LinearSpec
            from paddlellm.api import get_linear_kernel

            spec = LinearSpec(bits=self.bits, group_size=self.group_size, dtype=key[0],
                              in_features=self.in_features, out_features=self.out_features)
            cached = (key, get_linear_kernel(spec))
            object.__setattr__(self, "_kernel_cache", cached)
        return cached[1]

    def _forward_gpu(self, x: paddle.Tensor) -> paddle.Tensor | None:
        """Paddle's fused weight-only GEMM; ``None`` (dequantize path) if the kernel refuses."""
        from paddle.nn.quant import weight_only_linear, weight_quantize

        try:
            if self._gpu_weights is None:
                w = self.dequantize(_float_dtype(x.dtype)).T  # (in, out)
                algo = "weight_only_int4" if self.bits == 4 else "weight_only_int8"
                object.__setattr__(self, "_gpu_weights",
                                   weight_quantize(w, algo=algo, group_size=self.group_size))
            weight, scale = self._gpu_weights
            return weight_only_linear(x, weight, bias=self.bias, weight_scale=scale,
                                      weight_dtype="int4" if self.bits == 4 else "int8",
                                      group_size=self.group_size)
        except Exception as exc:  # an arch/shape the kernel lacks: stay correct, say so once
            warnings.warn(f"weight_only_linear unavailable ({exc}); dequantizing on the fly")
            self._gpu_kernel_failed = True
            return None

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits={self.bits}, group_size={self.group_size}, bias={self.bias is not None}")


def _gpu_kernel_applies(x: paddle.Tensor, layer: WeightOnlyLinear) -> bool:
    return (not getattr(layer, "_gpu_kernel_failed", False)
            and x.place.is_gpu_place()
            and _float_dtype(x.dtype) in ("float16", "bfloat16")
            and layer.group_size in (-1, 64, 128)
            and layer.in_features % 64 == 0 and layer.out_features % 64 == 0)


# --- model surgery ---------------------------------------------------------------------------

def get_submodule(model: nn.Layer, name: str) -> nn.Layer:
    layer = model
    for part in name.split("."):
        layer = getattr(layer, part)
    return layer


def set_submodule(model: nn.Layer, name: str, new: nn.Layer) -> None:
    parent_name, _, leaf = name.rpartition(".")
    parent = get_submodule(model, parent_name) if parent_name else model
    setattr(parent, leaf, new)


def linear_targets(model: nn.Layer, skip: tuple[str, ...] | list[str]) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` layers to quantize: all but those named (or ending) in ``skip``."""
    out = []
    for name, layer in model.named_sublayers():
        if not isinstance(layer, nn.Linear):
            continue
        if any(name == s or name.endswith("." + s) for s in skip):
            continue
        out.append((name, layer))
    return out


def weight_bytes(model: nn.Layer) -> dict[str, int]:
    """Resident bytes of parameters and buffers: in total and in the linear layers (float
    ``nn.Linear`` or quantized), so float and quantized models compare like for like."""
    total = linear = 0
    seen: set[int] = set()
    owners = {n for n, l in model.named_sublayers() if isinstance(l, (nn.Linear, QuantizedLayer))}
    tensors = [*model.named_parameters(), *model.named_buffers()]
    for name, t in tensors:
        if id(t) in seen:
            continue
        seen.add(id(t))
        nbytes = int(np.prod(t.shape)) * paddle.empty([], t.dtype).element_size()
        total += nbytes
        if name.rpartition(".")[0] in owners:
            linear += nbytes
    return {"total": total, "linear_layers": linear}
