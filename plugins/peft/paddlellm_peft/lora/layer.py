"""The LoRA layer: ``y = base(x) + s * B(A(dropout(x)))`` and its variants.

Weights in Paddle's layout: ``lora_A (in, r)``, ``lora_B (r, out)``, so the update is
``delta_W = s * A @ [AB] @ B`` of shape ``(in, out)`` like ``paddle.nn.Linear.weight``
(peft stores the transposes: ``lora_A.weight (r, in)``, ``lora_B.weight (out, r)``).

**Base-layer contract.** The wrapped base layer may be any layer with ``forward(x)`` and
``in_features``/``out_features`` (a quantized layer from the ``wrap_base_layer_for_adapter``
hook, QLoRA). DoRA, PiSSA and merging also need its float weight: a ``weight`` parameter
``(in, out)`` (``paddle.nn.Linear``), or a ``dequantize_weight()`` method returning one
(DoRA only; merging or PiSSA on such a base is refused with a clear error). An optional
``bias`` is the additive bias of the base output.
"""
from __future__ import annotations

import math

import numpy as np
import paddle
import paddle.nn as nn

from ..common import AdapterError, layer_features

FLOAT_DTYPES = (paddle.float32, paddle.float16, paddle.bfloat16, paddle.float64)


def _weight_param(base):
    w = getattr(base, "weight", None)
    if isinstance(w, paddle.Tensor) and w.dtype in FLOAT_DTYPES and len(w.shape) == 2:
        return w
    return None


class LoraLinear(nn.Layer):
    """A LoRA adapter around one linear base layer (``adapter_enabled`` switches it off)."""

    def __init__(self, base: nn.Layer, *, r: int, alpha: float, dropout: float = 0.0,
                 rslora: bool = False, use_dora: bool = False, use_mixer: bool = False,
                 lora_plus_scale: float = 1.0) -> None:
        super().__init__()
        self.base_layer = base
        self.in_features, self.out_features = layer_features(base)
        self.r, self.lora_alpha, self.rslora = int(r), float(alpha), bool(rslora)
        self.scaling = self.lora_alpha / (math.sqrt(self.r) if rslora else self.r)
        self.lora_dropout_p = float(dropout)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.use_dora, self.use_mixer = bool(use_dora), bool(use_mixer)
        self.adapter_enabled = True
        self.merged = False
        #: PiSSA's initial (A0, B0) as NumPy arrays, kept to save a plain-LoRA equivalent
        self.pissa_init_weights: tuple[np.ndarray, np.ndarray] | None = None
        self._dora_factor = None  # (out,) while a DoRA merge is in place
        w = _weight_param(base)
        dtype = w.dtype if w is not None else paddle.get_default_dtype()
        bound = 1.0 / math.sqrt(self.in_features)  # peft: kaiming_uniform_(a=sqrt(5)) on (r, in)
        self.lora_A = self.create_parameter(
            [self.in_features, self.r], dtype=dtype,
            default_initializer=nn.initializer.Uniform(-bound, bound))
        self.lora_B = self.create_parameter(  # LoRA+: B's learning rate times lora_plus_scale
            [self.r, self.out_features], dtype=dtype,
            attr=paddle.ParamAttr(initializer=nn.initializer.Constant(0.0),
                                  learning_rate=float(lora_plus_scale)))
        if self.use_mixer:
            mb = 1.0 / math.sqrt(self.r)
            self.lora_AB = self.create_parameter(
                [self.r, self.r], dtype=dtype, default_initializer=nn.initializer.Uniform(-mb, mb))
        else:
            self.lora_AB = None
        if self.use_dora:
            with paddle.no_grad():
                norm = self._weight_norm(self.base_weight(for_what="DoRA"))
            self.lora_magnitude = self.create_parameter(
                [self.out_features], dtype=dtype,
                default_initializer=nn.initializer.Assign(norm.astype(dtype)))
        else:
            self.lora_magnitude = None

    # -- pieces ----------------------------------------------------------------------------
    def base_weight(self, for_what: str = "merging", allow_dequantize: bool = True) -> paddle.Tensor:
        """The base layer's float weight ``(in, out)`` (dequantized where the base can)."""
        w = _weight_param(self.base_layer)
        if w is not None:
            return w
        if allow_dequantize and hasattr(self.base_layer, "dequantize_weight"):
            return self.base_layer.dequantize_weight()
        raise AdapterError(f"{for_what} needs the float weight of the base layer, but "
                           f"{type(self.base_layer).__name__} has none (a quantized base?); "
                           "load the base model unquantized to do this")

    def delta_weight(self) -> paddle.Tensor:
        """``s * A @ [AB] @ B``: ``(in, out)``."""
        a = self.lora_A if self.lora_AB is None else paddle.matmul(self.lora_A, self.lora_AB)
        return paddle.matmul(a, self.lora_B) * self.scaling  # (in, out)

    def _weight_norm(self, weight: paddle.Tensor) -> paddle.Tensor:
        """Norm of each output's column of ``W + delta``: ``(out,)`` (DoRA's ||W'||_c)."""
        full = weight.astype(self.lora_A.dtype) + self.delta_weight()  # (in, out)
        return paddle.sqrt((full * full).sum(axis=0))

    def _bias(self):
        b = getattr(self.base_layer, "bias", None)
        return b if isinstance(b, paddle.Tensor) else None

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        result = self.base_layer(x)  # (..., out)
        if self.merged:
            if not self.adapter_enabled:
                raise RuntimeError("this LoRA layer is merged into its base weights; unmerge "
                                   "it before disabling adapters")
            return result
        if not self.adapter_enabled:
            if self.pissa_init_weights is not None:  # the base is the residual: add A0 B0 back
                h0 = paddle.matmul(x, self.pissa_A0)  # (..., r)
                return result + paddle.matmul(h0, self.pissa_B0) * self.scaling
            return result
        xd = self.dropout(x) if self.dropout is not None else x
        h = paddle.matmul(xd, self.lora_A)  # (..., r)
        if self.lora_AB is not None:
            h = paddle.matmul(h, self.lora_AB)  # (..., r), MoSLoRA's mixer
        delta = paddle.matmul(h, self.lora_B) * self.scaling  # (..., out)
        if not self.use_dora:
            return result + delta
        weight = self.base_weight(for_what="DoRA")  # (in, out)
        norm = self._weight_norm(weight).detach()  # (out,), a constant (DoRA section 4.3)
        scale = self.lora_magnitude / norm  # (out,)
        if self.dropout is not None and self.training:
            base = paddle.matmul(xd, weight.astype(xd.dtype))  # (..., out) on the dropped input
        else:
            bias = self._bias()
            base = result - bias if bias is not None else result
        return result + (scale - 1.0) * base + scale * delta

    # -- merging ---------------------------------------------------------------------------
    def _float_weight_param(self) -> paddle.Tensor:
        w = _weight_param(self.base_layer)
        if w is None:
            raise AdapterError(f"cannot merge LoRA into a {type(self.base_layer).__name__} base "
                               "layer: merging needs a float (in, out) weight parameter "
                               "(quantized bases cannot be merged; dequantize first)")
        return w

    @paddle.no_grad()
    def merge(self) -> None:
        """Fold the adapter into the base weight (in place)."""
        if self.merged:
            return
        w = self._float_weight_param()
        full = w.astype("float32") + self.delta_weight().astype("float32")  # (in, out)
        if self.use_dora:
            factor = self.lora_magnitude.astype("float32") / paddle.sqrt((full * full).sum(axis=0))
            self._dora_factor = factor  # (out,)
            full = full * factor
        w.set_value(full.astype(w.dtype))
        self.merged = True

    @paddle.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`."""
        if not self.merged:
            return
        w = self._float_weight_param()
        full = w.astype("float32")
        if self.use_dora:
            full = full / self._dora_factor
            self._dora_factor = None
        w.set_value((full - self.delta_weight().astype("float32")).astype(w.dtype))
        self.merged = False

    # -- PiSSA -----------------------------------------------------------------------------
    @paddle.no_grad()
    def pissa_init(self) -> None:
        """A, B from the top-r singular triplets of W; the base keeps ``W - s * A @ B``."""
        w = _weight_param(self.base_layer)
        if w is None:
            raise AdapterError(f"--pissa needs the float weight of the base layer; "
                               f"{type(self.base_layer).__name__} has none (a quantized base?)")
        wt = w.astype("float32").numpy().astype(np.float64).T  # (out, in), torch layout
        u, s, vh = np.linalg.svd(wt, full_matrices=False)
        sr = np.sqrt(s[: self.r] / self.scaling)  # (r,)
        a_t = sr[:, None] * vh[: self.r]  # (r, in)
        b_t = u[:, : self.r] * sr[None, :]  # (out, r)
        residual = wt - self.scaling * (b_t @ a_t)  # (out, in)
        a0, b0 = a_t.T.astype(np.float32), b_t.T.astype(np.float32)  # (in, r), (r, out)
        self.lora_A.set_value(paddle.to_tensor(a0).astype(self.lora_A.dtype))
        self.lora_B.set_value(paddle.to_tensor(b0).astype(self.lora_B.dtype))
        w.set_value(paddle.to_tensor(residual.T.astype(np.float32)).astype(w.dtype))
        self.pissa_init_weights = (a0, b0)
        # the initial factors as buffers, so that a disabled adapter gives the original base
        self.register_buffer("pissa_A0", paddle.to_tensor(a0).astype(self.lora_A.dtype),
                             persistable=False)  # (in, r)
        self.register_buffer("pissa_B0", paddle.to_tensor(b0).astype(self.lora_B.dtype),
                             persistable=False)  # (r, out)

    def extra_repr(self) -> str:
        flags = [n for n, on in (("rslora", self.rslora), ("dora", self.use_dora),
                                 ("mixer", self.use_mixer),
                                 ("pissa", self.pissa_init_weights is not None)) if on]
        return (f"in={self.in_features}, out={self.out_features}, r={self.r}, "
                f"scaling={self.scaling:g}" + (f", {', '.join(flags)}" if flags else ""))
