"""LoKr: low-rank Kronecker-product weight updates (LyCORIS), in peft's ``LOKR`` format."""
from paddlellm.api import hookimpl


@hookimpl
def register_peft_methods(register):
    register("lokr", "paddlellm_peft.lokr.method:METHOD",
             options="paddlellm_peft.lokr.config:LoKrConfig",
             description="LoKr: Kronecker-product updates (--lokr_rank, --lokr_alpha)")
