"""Registers the compiled CPU kernels (light: nothing here imports Paddle or builds)."""
from paddlellm.api import hookimpl


@hookimpl
def register_attention_kernels(register):
    register("cpu", "paddlellm_kernels_cpu.attention:kernel", priority=10,
             description="compiled paged attention (block table read in place; AVX-512/AVX2); "
                         "float32 serving calls, the reference kernel does the rest")


@hookimpl
def register_linear_kernels(register):
    register("cpu", "paddlellm_kernels_cpu.linear:kernel", priority=10,
             description="compiled weight-only int8/int4 matrix-vector products (AVX-512/AVX2) "
                         "for the quant plugin's layers at decode")
