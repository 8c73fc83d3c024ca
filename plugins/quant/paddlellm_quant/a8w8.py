"""A8W8 linear layer: int8 per-output-channel weights, int8 activations with a static
per-tensor scale from calibration, and an **exact integer GEMM** (int8×int8 products summed
in int32, as on a GPU's int8 tensor cores).

Paddle has no int8 GEMM kernel on CPU, so the int8 operands are widened to int32 and
multiplied with Paddle's int32 ``matmul``: that is integer arithmetic, exact (no float
rounding) for ``in_features < 2**31 / 127**2 ≈ 133,000``, which the layer checks. Only the
final dequantization ``acc * input_scale * weight_scale`` is in float32, as in real kernels.

SmoothQuant's per-input-channel factor ``s`` lives either in the preceding norm (folded by
:mod:`paddlellm_quant.smoothquant`) or, where no norm precedes (``o_proj``, ``down_proj``),
in this layer's ``smooth_scale``: the activation quantizer computes
``round(x / (s * input_scale))`` — one multiply per element, the same as without smoothing.
"""
from __future__ import annotations

import paddle
import paddle.nn as nn

from .layers import QuantizedLayer

INT8_MAX = 127
#: largest in_features for which an int32 accumulator cannot overflow
MAX_EXACT_K = (2**31 - 1) // (INT8_MAX * INT8_MAX)


def quantize_int8(x: paddle.Tensor, scale: paddle.Tensor) -> paddle.Tensor:
    """Symmetric int8: ``clip(round(x / scale), -127, 127)`` (round half to even)."""
    return paddle.clip(paddle.round(x / scale), -INT8_MAX, INT8_MAX).astype("int8")


def int8_scale(absmax: paddle.Tensor) -> paddle.Tensor:
    """``absmax / 127``, with all-zero channels given scale 1."""
    absmax = absmax.astype("float32")
    return paddle.where(absmax > 0, absmax / INT8_MAX, paddle.ones_like(absmax))


def int8_matmul(xq: paddle.Tensor, wq: paddle.Tensor) -> paddle.Tensor:
    """Exact ``(N, K) int8 @ (M, K) int8 ^T -> (N, M) int32``."""
    if xq.shape[-1] > MAX_EXACT_K:
        raise ValueError(f"in_features {xq.shape[-1]} > {MAX_EXACT_K}: an int32 accumulator could overflow")
    return paddle.matmul(xq.astype("int32"), wq.astype("int32"), transpose_y=True)


class A8W8Linear(QuantizedLayer):
    """``y = x W + b`` computed as int8 activations × int8 weights with int32 accumulation.

    Buffers: ``qweight`` ``(out, in)`` int8 (the plugin's layout, as for weight-only),
    ``weight_scale`` ``(out,)`` float32, ``input_scale`` ``(1,)`` float32 (static, per tensor),
    ``smooth_scale`` ``(in,)`` float32
    (ones unless SmoothQuant could not fold into a norm), ``bias`` ``(out,)`` if any.
    """

    quant_method = "paddlellm_a8w8"
    bits = 8

    def __init__(self, in_features: int, out_features: int, has_bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", paddle.zeros([out_features, in_features], dtype="int8"))
        self.register_buffer("weight_scale", paddle.ones([out_features], dtype="float32"))
        self.register_buffer("input_scale", paddle.ones([1], dtype="float32"))
        self.register_buffer("smooth_scale", paddle.ones([in_features], dtype="float32"))
        if has_bias:
            self.register_buffer("bias", paddle.zeros([out_features], dtype="float32"))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_absmax: float,
                    smooth_scale: paddle.Tensor | None = None) -> "A8W8Linear":
        """Quantize ``linear``. ``act_absmax`` is max |input / smooth_scale| on calibration
        data; ``smooth_scale`` ``(in,)`` is kept in the layer (the weight rows are multiplied
        by it here). Pass ``None`` when the smoothing was folded into the preceding norm and
        into ``linear.weight`` already (or when there is no smoothing)."""
        w = linear.weight.detach().astype("float32")  # (in, out)
        layer = cls(w.shape[0], w.shape[1], linear.bias is not None)
        if smooth_scale is not None:
            smooth_scale = smooth_scale.astype("float32")
            w = w * smooth_scale.unsqueeze(-1)  # (in, out): W' = diag(s) W
            layer.smooth_scale = smooth_scale
        w_scale = int8_scale(w.abs().max(axis=0))  # (out,)
        layer.qweight = quantize_int8(w, w_scale).T  # (out, in) int8
        layer.weight_scale = w_scale
        layer.input_scale = int8_scale(paddle.to_tensor([float(act_absmax)]))
        if linear.bias is not None:
            layer.bias = linear.bias.detach().astype("float32")
        return layer

    def quantize_input(self, x: paddle.Tensor) -> paddle.Tensor:
        """``(..., in)`` float -> int8 with the static scale (and the smoothing factor)."""
        return quantize_int8(x.astype("float32"), self.smooth_scale * self.input_scale)

    def dequantized_weight(self) -> paddle.Tensor:
        """``(in, out)`` float32 ``diag(s)^-1 Wq * scale``: the float weight this layer applies."""
        w = self.qweight.astype("float32").T * self.weight_scale  # (in, out)
        return w / self.smooth_scale.unsqueeze(-1)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        dtype, shape = x.dtype, x.shape
        x2 = x.reshape([-1, shape[-1]])  # (N, in)
        if not x.stop_gradient and paddle.is_grad_enabled():
            # a frozen base under a trainable adapter: the same integer grid in float32 with a
            # straight-through estimator, so gradients reach the input (round has none)
            xs = x2.astype("float32") / (self.smooth_scale * self.input_scale)  # (N, in)
            xq = xs + (paddle.clip(paddle.round(xs), -INT8_MAX, INT8_MAX) - xs).detach()
            acc = paddle.matmul(xq, self.qweight.astype("float32"), transpose_y=True)  # (N, out)
        else:
            acc = int8_matmul(self.quantize_input(x2), self.qweight)  # (N, out) int32, exact
        y = acc.astype("float32") * (self.input_scale * self.weight_scale)  # (N, out)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape([*shape[:-1], self.out_features]).astype(dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, int8 x int8 -> int32"
