"""Registers the static-activation PTQ quantizers: SmoothQuant A8W8 (``a8w8``), A8W8 with an
int8 KV cache (``a8w8c8``) and FP8 e4m3 (``fp8``, alias ``a8w8_fp8``). Importing this module
never imports Paddle."""
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
