"""Registers the static-activation PTQ quantizers: SmoothQuant A8W8 (``a8w8``), A8W8 with an
int8 KV cache (``a8w8c8``) and FP8 e4m3 (``fp8``, alias ``a8w8_fp8``). Importing this module
never imports Paddle. Also registers the int8 KV-cache layouts they set on a model."""
from __future__ import annotations

from paddlellm.api import hookimpl


@hookimpl
def register_quantizers(register):
    register("a8w8", "paddlellm_quant.smoothquant:SMOOTHQUANT",
             description="SmoothQuant PTQ: int8 weights and static int8 activations, int32 GEMM")
    register("a8w8c8", "paddlellm_quant.smoothquant:SMOOTHQUANT",
             description="a8w8 plus an int8 KV cache with static per-head scales")
    register("fp8", "paddlellm_quant.fp8:FP8", aliases=("a8w8_fp8",),
             description="FP8 e4m3 weights and static activations (compute simulated on CPU)")


@hookimpl
def register_kv_cache_layouts(register):
    register("int8_static", "paddlellm_quant.kv_int8:INT8_STATIC",
             description="int8 keys/values with static per-head scales (a8w8c8)")
    register("int8_dynamic", "paddlellm_quant.kv_int8:INT8_DYNAMIC",
             description="int8 keys/values with a scale per token and head")
