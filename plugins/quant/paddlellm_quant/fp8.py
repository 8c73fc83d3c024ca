"""FP8 (e4m3fn) weights and activations: per-channel weight scales, static per-tensor
activation scales from calibration.

Storage is Paddle's ``float8_e4m3fn`` dtype (1 byte per weight, saved as ``F8_E4M3`` in
safetensors). Compute is **simulated** on CPU: Paddle has no FP8 GEMM kernel there, so the
forward pass quantizes the activations to e4m3 (exact rounding), widens both operands back to
float32 and multiplies in float32 — numerically an FP8×FP8 GEMM with float32 accumulation.

Rounding: Paddle's cast to ``float8_e4m3fn`` rounds to nearest, ties to even, for values
inside the finite range, but it maps NaN to 448 and some values just above 448 to NaN, so
:func:`to_e4m3` clips to ``[-448, 448]`` first (saturating conversion, as the OCP spec's
``satfinite`` mode and every FP8 GEMM library do).
"""
from __future__ import annotations

from typing import Any, Literal

import paddle
import paddle.nn as nn

from .layers import QuantizedLayer

#: the largest finite e4m3fn value (1.75 * 2**8)
E4M3_MAX = 448.0
FP8_DTYPE = "float8_e4m3fn"


def to_e4m3(x: paddle.Tensor) -> paddle.Tensor:
    """Round float ``x`` to e4m3fn (nearest, ties to even, saturating at ±448)."""
    return paddle.clip(x.astype("float32"), -E4M3_MAX, E4M3_MAX).astype(paddle.float8_e4m3fn)


def _scale_from_absmax(absmax: paddle.Tensor) -> paddle.Tensor:
    """``absmax / 448`` with all-zero channels given scale 1 (avoids 0/0)."""
    absmax = absmax.astype("float32")
    return paddle.where(absmax > 0, absmax / E4M3_MAX, paddle.ones_like(absmax))


class FP8Linear(QuantizedLayer):
    """``y = x W + b`` with ``W`` stored in e4m3 (per-output-channel scale) and ``x``
    quantized to e4m3 with a static per-tensor scale (simulated compute, see module doc).

    Buffers: ``qweight`` ``(out, in)`` float8_e4m3fn, ``weight_scale`` ``(out,)`` float32,
    ``input_scale`` ``(1,)`` float32, and ``bias`` ``(out,)`` float32 when the layer has one.
    """

    quant_method = "paddlellm_fp8"
    bits = 8

    def __init__(self, in_features: int, out_features: int, has_bias: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", paddle.zeros([out_features, in_features]).astype(FP8_DTYPE))
        self.register_buffer("weight_scale", paddle.ones([out_features], dtype="float32"))
        self.register_buffer("input_scale", paddle.ones([1], dtype="float32"))
        if has_bias:
            self.register_buffer("bias", paddle.zeros([out_features], dtype="float32"))
        else:
            self.bias = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_absmax: float) -> "FP8Linear":
        """Quantize a float ``nn.Linear``; ``act_absmax`` is the calibrated max |input|."""
        w = linear.weight.detach().astype("float32")  # (in, out)
        layer = cls(w.shape[0], w.shape[1], linear.bias is not None)
        w_scale = _scale_from_absmax(w.abs().max(axis=0))  # (out,)
        layer.qweight = to_e4m3((w / w_scale).T)  # (out, in) e4m3
        layer.weight_scale = w_scale
        layer.input_scale = _scale_from_absmax(paddle.to_tensor([float(act_absmax)]))
        if linear.bias is not None:
            layer.bias = linear.bias.detach().astype("float32")
        return layer

    def dequantized_weight(self) -> paddle.Tensor:
        """``(in, out)`` float32 weight as the quantized layer sees it."""
        return self.qweight.astype("float32").T * self.weight_scale

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        dtype = x.dtype
        xs = x.astype("float32") / self.input_scale  # (..., in)
        xq = to_e4m3(xs).astype("float32")  # (..., in) on the e4m3 grid
        if not x.stop_gradient and paddle.is_grad_enabled():  # straight-through estimator
            xq = xs + (xq - xs).detach()  # (frozen base under a trainable adapter)
        # simulated FP8 GEMM: e4m3 operands widened to float32, float32 accumulation
        y = paddle.matmul(xq, self.qweight.astype("float32"), transpose_y=True)  # (..., out)
        y = y * (self.input_scale * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.astype(dtype)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, e4m3 weights+activations (simulated)"


# --- the quantizer (fp8) ---------------------------------------------------------------------

from pydantic import BaseModel, ConfigDict, Field  # noqa: E402

from .smoothquant import StaticPTQQuantizer  # noqa: E402


class FP8Options(BaseModel):
    """Options of ``fp8`` (alias ``a8w8_fp8``, PaddleNLP's name)."""

    model_config = ConfigDict(extra="forbid")

    kv_cache_quant: Literal["none", "static", "dynamic"] | None = Field(
        None, description="int8 KV cache beside FP8 linears (default none)")
    modules_to_not_convert: list[str] = Field(default_factory=list, description="linears kept in float")


class FP8Quantizer(StaticPTQQuantizer):
    name = "fp8"
    quant_types = ("fp8", "a8w8_fp8")
    quant_method = "paddlellm_fp8"  # ours: not transformers' fine-grained "fp8" layout
    config_class = FP8Options
    compute = ("e4m3 storage; compute SIMULATED on CPU (e4m3 operands widened to float32, "
               "float32 accumulation): Paddle has no FP8 GEMM kernel here")
    weight_storage = ("qweight float8_e4m3fn (out, in), weight_scale (out,), input_scale (1,) per "
                      "tensor; compute simulated on CPU (e4m3 operands widened to float32)")

    def make_layer(self, linear, act_absmax, smooth_scale):
        return FP8Linear.from_linear(linear, act_absmax)

    def empty_layer(self, linear):
        k, m = linear.weight.shape
        return FP8Linear(k, m, linear.bias is not None)

    def quantization_config(self, quant_type, opts) -> dict[str, Any]:
        qc = super().quantization_config(quant_type, opts)
        qc.update(fp8_format="e4m3fn", compute="simulated (dequantize to float32; no FP8 GEMM on this backend)")
        return qc


FP8 = FP8Quantizer()
