"""ReFT (LoReFT, Wu et al., 2024): low-rank interventions on hidden states."""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("reft", "paddlellm_peft.reft.method:METHOD",
             options="paddlellm_peft.reft.config:ReftConfig", aliases=("loreft",),
             description="LoReFT: h + R^T(Wh + b - Rh) on chosen layers/positions "
                         "(--reft_rank, --reft_layers, --reft_positions); not mergeable")
