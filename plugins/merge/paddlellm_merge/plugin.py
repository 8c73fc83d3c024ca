"""Registers the merge methods and the ``llm merge`` command (no heavy import here)."""
from paddlellm.api import hookimpl

_TA = "paddlellm_merge.methods.task_arithmetic:"


@hookimpl
def register_merge_methods(register):
    register("linear", "paddlellm_merge.methods.linear:LINEAR",
             description="weighted average (model soups)")
    register("slerp", "paddlellm_merge.methods.slerp:SLERP",
             description="spherical interpolation of two models, per-tensor t")
    register("task_arithmetic", _TA + "TASK_ARITHMETIC", description="base + weighted task vectors")
    register("ties", _TA + "TIES", description="trim by magnitude + sign consensus (TIES)")
    register("dare_linear", _TA + "DARE_LINEAR", description="random drop + rescale (DARE), linear")
    register("dare_ties", _TA + "DARE_TIES", description="DARE drop + TIES sign consensus")
    register("della", _TA + "DELLA", description="magnitude-ranked drop (DELLA) + sign consensus")
    register("della_linear", _TA + "DELLA_LINEAR", description="DELLA drop, linear")


@hookimpl
def register_commands(app):
    from .cli import add_merge_command

    add_merge_command(app)
