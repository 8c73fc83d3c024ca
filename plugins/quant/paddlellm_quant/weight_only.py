"""Weight-only round-to-nearest (RTN) int8 / int4: ``weight_only_int8``, ``weight_only_int4``.

Symmetric absmax scales per output channel (``group_size=-1``) or per group of input
columns; no calibration data.
"""
from __future__ import annotations

from .base import BaseQuantizer
from .layers import WeightOnlyLinear, linear_targets, set_submodule

BITS = {"weight_only_int8": 8, "weight_only_int4": 4}


class WeightOnlyQuantizer(BaseQuantizer):
    name = "weight_only"
    quant_types = tuple(BITS)
    quant_method = "paddlellm_weight_only"  # ours ("rtn" is a vLLM method of another layout)

    def bits_for(self, quant_type, opts):
        return BITS[quant_type]

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        bits = BITS[quant_type]
        for name, lin in linear_targets(model, opts.modules_to_not_convert):
            set_submodule(model, name, WeightOnlyLinear.from_linear(lin, bits=bits, group_size=opts.group_size))


WEIGHT_ONLY = WeightOnlyQuantizer()
