"""Registers the weight-only quantizers (RTN int8/int4, GPTQ, AWQ), the QLoRA base-layer hook
and ``llm quantize``. Importing this module never imports Paddle."""
from __future__ import annotations

from paddlellm.api import hookimpl, is_quantized_module


@hookimpl
def register_quantizers(register):
    register("weight_only_int8", "paddlellm_quant.weight_only:WEIGHT_ONLY",
             description="weight-only int8, round to nearest (per channel or --group_size)")
    register("weight_only_int4", "paddlellm_quant.weight_only:WEIGHT_ONLY",
             description="weight-only int4 (packed 2 per byte), round to nearest")
    register("gptq", "paddlellm_quant.gptq:GPTQ",
             description="GPTQ: Hessian-aware int4/int8 from calibration data (act_order, groups)")
    register("awq", "paddlellm_quant.awq:AWQ",
             description="AWQ: activation-aware input scales + clipping search, int4/int8")


@hookimpl
def register_commands(app):
    from .cli import add_quantize_command

    add_quantize_command(app)


@hookimpl
def wrap_base_layer_for_adapter(layer, adapter_name, method):
    """QLoRA: a quantized layer (one declaring ``paddlellm.interfaces.QuantizedModule``) is
    the (frozen, integer) base of the adapter."""
    if is_quantized_module(layer):
        from .qlora import frozen_base

        return frozen_base(layer)
    return None
