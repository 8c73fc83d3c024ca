"""The entry-point module: light, Paddle-free; it only says what it registers."""
from paddlellm.api import hookimpl


@hookimpl
def register_attention_kernels(register):
    # A "module:attribute" target is imported only when the kernel is first used, so
    # `llm plugins` and `llm --help` stay fast and never import Paddle.
    register("sdpa-example", "paddlellm_example_kernel.kernel:kernel", priority=-10,
             description="example: paddle.nn.functional.scaled_dot_product_attention")
