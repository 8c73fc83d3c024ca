"""MoRA: high-rank updating with a square trainable matrix (Jiang et al., 2024)."""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("mora", "paddlellm_peft.mora.method:METHOD",
             options="paddlellm_peft.mora.config:MoraConfig",
             description="MoRA: square r^ x r^ matrix between fixed compress/decompress "
                         "(--mora_rank, --mora_type)")
