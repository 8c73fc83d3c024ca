"""Registers the reference attention kernel."""
from paddlellm.api import hookimpl


@hookimpl
def register_attention_kernels(register):
    register("reference", "paddlellm_kernels_reference.kernel:kernel", priority=0,
             description="plain Paddle matmul/softmax attention; exact in float32; every mask")
