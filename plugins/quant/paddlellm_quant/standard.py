"""What GPTQ and AWQ share: checkpoints in the published layouts (:mod:`.packed`), loading
such checkpoints from elsewhere, the calibration-size warning and the per-layer report.

Loading decides which layers are quantized from the checkpoint itself (a ``{module}.qweight``
tensor), not from our defaults, so a model quantized by another tool (which may or may not
have quantized, say, ``lm_head``) loads as it was written. Checkpoints of this plugin's
earlier layout (``"format": "paddlellm"``: int8/uint8 ``(out, in)`` ``qweight`` and
``(out, G)`` scales) still load, into :class:`~.layers.WeightOnlyLinear`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

import numpy as np
import paddle.nn as nn

from .base import BaseQuantizer, QuantizeError, standard_layout_config
from .calibration import check_calibration_size, warn_calibration, warn_quantization
from .layers import linear_targets, set_submodule
from .packed import PackedLayoutError, per_word


def output_error(x: np.ndarray, w: np.ndarray, wq: np.ndarray) -> float:
    """Mean over calibration rows of ``||x W^T - x Wq^T||^2``: ``x (N, in)``, ``w (out, in)``."""
    d = x.astype(np.float64) @ (w.astype(np.float64) - wq.astype(np.float64)).T  # (N, out)
    return float((d * d).sum() / max(len(x), 1))


class StandardLayoutQuantizer(BaseQuantizer):
    """Base of :class:`~.gptq.GPTQQuantizer` and :class:`~.awq.AWQQuantizer`."""

    layer_class: ClassVar[type] = nn.Layer

    # -- quantizing ------------------------------------------------------------------------
    def quantize(self, model, quant_type, calibration, config=None):
        model = super().quantize(model, quant_type, calibration, config)
        report = getattr(model, "quantization_report", None) or {}
        fallback = report.get("rtn_fallback") or []
        meta = model.quantization_config.setdefault("meta", {})
        meta["rtn_fallback"] = list(fallback)
        meta["calibration_tokens"] = report.get("calibration_tokens")
        return model

    def check_calibration(self, model, batches, targets: Mapping[str, nn.Linear], opts) -> int:
        widest = max((int(l.weight.shape[0]) for l in targets.values()), default=0)
        return check_calibration_size(self.name, batches, widest, opts.min_calibration_tokens)

    def packable_targets(self, targets: dict[str, nn.Linear], opts) -> dict[str, nn.Linear]:
        """The targets whose shapes the layout holds; the others stay in float, are added to
        ``modules_to_not_convert`` (which transformers and vLLM honour) and named in a
        :class:`~.calibration.QuantizationWarning`."""
        keep, left = {}, []
        for name, lin in targets.items():
            in_f, out_f = lin.weight.shape
            try:
                self.layer_class(in_f, out_f, bits=opts.bits, group_size=opts.group_size)
                keep[name] = lin
            except PackedLayoutError as exc:
                left.append(f"{name} ({exc})")
                opts.modules_to_not_convert = [*opts.modules_to_not_convert, name]
        if left:
            warn_quantization(f"{self.name}: {len(left)} layer(s) kept in float, their shapes do not "
                              f"fit the {self.layer_class.layout} layout: {'; '.join(left[:4])}"
                              + ("; ..." if len(left) > 4 else "")
                              + " (another --group_size may fit them)")
        if targets and not keep:
            raise QuantizeError(f"{self.name}: no linear layer fits the {self.layer_class.layout} "
                                f"layout with bits={opts.bits}, group_size={opts.group_size}")
        return keep

    def report_fallback(self, model, fallback: list[str], n_layers: int, tokens: int,
                        what: str) -> None:
        model.quantization_report = {"rtn_fallback": fallback, "calibration_tokens": tokens,
                                     "layers": n_layers}
        if fallback:
            names = ", ".join(fallback[:6]) + (", ..." if len(fallback) > 6 else "")
            warn_calibration(f"{self.name}: {len(fallback)} of {n_layers} {what} fell back to "
                             "round-to-nearest, whose calibration-set reconstruction error was "
                             f"lower: {names}")

    def standard_config(self, quant_type: str, opts) -> dict[str, Any]:
        raise NotImplementedError

    def quantization_config(self, quant_type, opts):
        qc = self.standard_config(quant_type, opts)
        qc["quant_type"] = quant_type  # ours; readers of the layout ignore it
        return qc

    # -- loading ---------------------------------------------------------------------------
    def empty_layer(self, lin: nn.Linear, qc: Mapping[str, Any]) -> nn.Layer:
        raise NotImplementedError

    def prepare_for_loading(self, model, quantization_config):
        if not standard_layout_config(quantization_config):
            return super().prepare_for_loading(model, quantization_config)
        skip = quantization_config.get("modules_to_not_convert") or ("lm_head",)
        return self._swap(model, quantization_config, [n for n, _ in linear_targets(model, skip)])

    def prepare_for_checkpoint(self, model, quantization_config, keys: Iterable[str]):
        """Swap exactly the linears that have ``{name}.qweight`` in the checkpoint."""
        if not standard_layout_config(quantization_config):
            return super().prepare_for_loading(model, quantization_config)
        have = {k[: -len(".qweight")] for k in keys if k.endswith(".qweight")}
        names = [n for n, l in model.named_sublayers() if isinstance(l, nn.Linear) and n in have]
        unknown = sorted(have - set(names))
        if unknown:
            raise KeyError(f"quantized tensors for {', '.join(unknown[:3])} match no linear layer "
                           f"of this {type(model).__name__} (module names differ from the checkpoint's?)")
        return self._swap(model, quantization_config, names)

    def _swap(self, model, qc, names: list[str]):
        layers = dict(model.named_sublayers())
        for name in names:
            lin = layers[name]
            try:
                layer = self.empty_layer(lin, qc)
            except PackedLayoutError as exc:
                raise ValueError(f"{name}: {exc}") from None
            set_submodule(model, name, layer)
        return model

    def load_pretrained(self, family, path, quantization_config, dtype="float32"):
        from .checkpoint import load_quantized

        qc = dict(quantization_config)
        qc.setdefault("quant_type", self.quant_types[0])
        bits = int(qc.get("bits", 4))
        per_word(bits)
        return load_quantized(family, path, self, qc, dtype=dtype)
