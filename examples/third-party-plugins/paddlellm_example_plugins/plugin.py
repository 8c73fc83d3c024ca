"""The entry-point module: registers by dotted path, so listing plugins imports no Paddle."""
from paddlellm.api import hookimpl


@hookimpl
def register_alignment_losses(register):
    register("ln_dpo", "paddlellm_example_plugins.loss:LOSS",
             options="paddlellm_example_plugins.loss:LNDPOConfig",
             description="DPO on per-token (length-normalised) log-ratios")


@hookimpl
def register_peft_methods(register):
    register("ia3", "paddlellm_example_plugins.ia3:METHOD",
             options="paddlellm_example_plugins.ia3:IA3Config",
             description="IA3: learned per-channel scaling of the targeted projections")


@hookimpl
def register_quantizers(register):
    register("rtn_int8_sim", "paddlellm_example_plugins.rtn:QUANTIZER",
             options="paddlellm_example_plugins.rtn:RTNOptions",
             description="round-to-nearest int8 grid per output channel, kept in float")
