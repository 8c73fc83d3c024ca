"""VeRA: shared frozen random projections, trainable scaling vectors (peft's ``VERA``)."""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("vera", "paddlellm_peft.vera.method:METHOD",
             options="paddlellm_peft.vera.config:VeraConfig",
             description="VeRA: shared random A/B, trainable vectors (--vera_rank)")
