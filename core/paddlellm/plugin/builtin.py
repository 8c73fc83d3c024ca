"""The core's own plugin: default decisions and the built-in commands.

It uses the same hooks a third-party plugin would; a plugin can override a decision by
implementing the hook without ``trylast`` and returning a name.
"""
from __future__ import annotations

from .device import parse_device
from ..errors import BackendUnavailableError
from ..hookspecs import hookimpl
from ..interfaces import kernel_runs_on


@hookimpl(trylast=True)
def select_backend(requested, registry):
    name, _ = parse_device(requested)
    if name is not None:
        entry = registry.get("backend", name)  # unknown names list the installed ones
        backend = entry.load()
        if not backend.is_available():
            raise BackendUnavailableError(
                f"backend '{entry.name}' is installed but not available here: "
                f"{backend.unavailable_reason()}")
        return entry.name
    for entry in sorted(registry.entries("backend"), key=lambda e: -e.priority):
        try:
            if entry.load().is_available():
                return entry.name
        except Exception:  # a backend that cannot even load is simply not available
            continue
    return None


@hookimpl(trylast=True)
def select_attention_kernel(spec, backend, registry):
    for entry in sorted(registry.entries("attention_kernel"), key=lambda e: -e.priority):
        kernel = entry.load()
        if kernel_runs_on(kernel, backend) and kernel.supports(spec):
            return entry.name
    return None


@hookimpl(trylast=True)
def select_linear_kernel(spec, backend, registry):
    for entry in sorted(registry.entries("linear_kernel"), key=lambda e: -e.priority):
        try:
            kernel = entry.load()
            if kernel_runs_on(kernel, backend) and kernel.supports(spec):
                return entry.name
        except Exception:  # a kernel that cannot load serves nothing; the layer's own math runs
            continue
    return None


@hookimpl
def register_kv_cache_layouts(register):
    register("float", "paddlellm.modeling.kv_layout:FLOAT",
             description="keys and values in the model's dtype (the default)")


@hookimpl
def register_stages(register):
    register("pretrain", "paddlellm.training.stages.pretrain:pretrain_stage",
             description="causal LM on raw text (the generated demo corpus without --data)")
    register("sft", "paddlellm.training.stages.sft:sft_stage",
             description="supervised fine-tuning, loss on responses (the demo without --data)")


@hookimpl
def register_loggers(register):
    register("jsonl", "paddlellm.loggers.jsonl:JsonlLogger",
             description="output_dir/metrics.jsonl, one JSON object per record (always on)")
    register("tensorboard", "paddlellm.loggers.tensorboard:TensorBoardLogger",
             description="TensorBoard event files under --logging_dir (output_dir/runs; "
                         "extra 'tensorboard')")
    register("visualdl", "paddlellm.loggers.visualdl:VisualDLLogger",
             description="VisualDL records under --logging_dir (output_dir/runs; "
                         "extra 'visualdl')")
    register("plot", "paddlellm.loggers.plot:PlotLogger",
             description="output_dir/loss.png: train/eval loss and learning rate, at every "
                         "checkpoint and at the end (extra 'plot')")


@hookimpl
def register_commands(app):
    from ..cli import commands

    commands.add_core_commands(app)
