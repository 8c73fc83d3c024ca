"""Prefix tuning (Li & Liang, 2021): trainable per-layer prefix keys/values, peft format."""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("prefix", "paddlellm_peft.prefix.method:METHOD",
             options="paddlellm_peft.prefix.config:PrefixConfig", aliases=("prefix_tuning",),
             description="prefix tuning: trainable past keys/values per layer "
                         "(--num_prefix_tokens, --prefix_projection)")
