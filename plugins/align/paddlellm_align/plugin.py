"""Registers the alignment losses and the ``align`` stage (no heavy import here)."""
from paddlellm.api import hookimpl


@hookimpl
def register_alignment_losses(register):
    register("dpo", "paddlellm_align.losses:DPO", aliases=("simpo", "orpo", "ipo", "hinge"),
             description="DPO family: --loss_type sigmoid|hinge|ipo|simpo|orpo (aliases pick "
                         "the loss type)")
    register("kto", "paddlellm_align.losses:KTO",
             description="KTO on pointwise desirable/undesirable data, batch KL estimate")


@hookimpl
def register_stages(register):
    register("align", "paddlellm_align.stage:align_stage",
             description="preference alignment with the --align loss (the demo without --data: "
                         "SFT, then DPO on generated correct/wrong answers)")
