"""The hook specifications of paddlellm: the one contract between the core and its plugins.

A plugin is a module (or object) with functions decorated by :data:`hookimpl`, named after
the hooks below. Distributions announce such modules in the entry-point group ``paddlellm``::

    [project.entry-points.paddlellm]
    my_lora = "my_package.my_lora"

Registration hooks receive a ``register`` callback; the host owns the registry (duplicate
names, aliases, errors). ``register(name, target, *, aliases=(), description="", priority=0,
options=None)`` where ``target`` is the object itself or a ``"module:attribute"`` string that
is imported on first use, so that listing plugins never imports Paddle or other heavy code.
``options`` (optional) names the pydantic model of the plugin's ``llm run`` keys the same way
(``"pkg.config:LoraConfig"``, a light module) so ``llm run --help`` lists them without
importing the target; without it the target's ``config_class`` is used.

"Pick one" decisions are ``firstresult`` hooks: the first implementation that returns a value
other than ``None`` wins; the core's own default runs last (``trylast``).

Each registration hook belongs to one plugin kind of :data:`paddlellm.kinds.KIND_TABLE`, whose
Protocol the registered targets are checked against when they load. A ``@hookimpl`` function
whose name is none of the hooks below (``register_model``) is an error reported with the plugin
(pluggy's ``check_pending()``), never silently ignored.
"""
from __future__ import annotations

import pluggy

PROJECT = "paddlellm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration hooks -------------------------------------------------------------------

@hookspec
def register_models(register):
    """Register model families and presets.

    ``register(name, target)`` where ``target`` resolves to an object following
    :class:`paddlellm.interfaces.ModelFamily` (builds a model from a config, maps
    Hugging Face weight names). Preset names (``qwen2.5-0.5b``) are registered as aliases
    or through the family's ``presets`` mapping.
    """


@hookspec
def register_trainer_strategies(register):
    """Register trainer strategies (single device, data/tensor/pipeline parallel, sharding).

    ``target`` resolves to a class or factory following
    :class:`paddlellm.interfaces.TrainerStrategy`.
    """


@hookspec
def register_peft_methods(register):
    """Register parameter-efficient fine-tuning methods (LoRA, prefix tuning, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.PeftMethod`.
    """


@hookspec
def register_alignment_losses(register):
    """Register alignment losses (DPO family, KTO, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.AlignmentLoss`.
    """


@hookspec
def register_rewards(register):
    """Register rewards for RLHF (PPO, GRPO): reward-model checkpoints, rules, reward servers.

    ``target`` resolves to a function following :class:`paddlellm.interfaces.Reward` (a
    rule: ``(prompts, completions, references) -> list[float]``), or to a class with a
    pydantic ``config_class`` whose instances, built from those options, follow it.
    """


@hookspec
def register_merge_methods(register):
    """Register model-merging methods (linear, slerp, ties, dare, della, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.MergeMethod`.
    """


@hookspec
def register_quantizers(register):
    """Register quantizers (weight-only int8/int4, GPTQ, AWQ, SmoothQuant, KV int8, FP8).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.Quantizer`.
    """


@hookspec
def register_backends(register):
    """Register hardware backends (cpu, gpu, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.Backend`. The
    backend's module may import Paddle; ``is_available()`` is only called when a run needs
    a device, never when plugins are listed.
    """


@hookspec
def register_attention_kernels(register):
    """Register attention kernels (reference, fused, paged, flash, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.AttentionKernel`.
    """


@hookspec
def register_linear_kernels(register):
    """Register compiled kernels for quantized linear layers (weight-only int8/int4 ...).

    ``target`` resolves to an object following
    :class:`paddlellm.interfaces.WeightOnlyLinearKernel`; quantized layers ask
    :func:`paddlellm.modeling.linear.get_linear_kernel` and keep their own math when none serves.
    """


@hookspec
def register_stages(register):
    """Register training stages for ``llm run --stage NAME`` (pretrain, sft, dpo, ...).

    ``target`` resolves to a :class:`paddlellm.interfaces.Stage`, a callable
    ``stage(ctx) -> dict``: ``ctx`` is the composed
    :class:`paddlellm.training.compose.RunContext` (config, backend, strategy, plugin registry); the
    returned summary (metrics, output paths) is printed and saved by ``llm run``. Write the
    stage as a recipe on :class:`paddlellm.training.TrainingSession` (docs/plugins.md,
    "Writing a stage").
    """


@hookspec
def register_kv_cache_layouts(register):
    """Register KV-cache layouts (how a model stores its keys and values: float, int8, ...).

    ``target`` resolves to an object following :class:`paddlellm.interfaces.KVCacheLayout`; a
    model uses the layout named by its ``kv_cache_layout`` attribute (see
    :mod:`paddlellm.modeling.kv_layout`).
    """


@hookspec
def register_loggers(register):
    """Register training loggers for ``llm run --loggers NAME,...`` (TensorBoard, VisualDL,
    plots, experiment trackers).

    ``target`` resolves to a factory (a class or function) called with the logger's options
    (its pydantic ``config_class``, or None) that returns an object following
    :class:`paddlellm.interfaces.TrainingLogger`: ``on_start(config, output_dir)``,
    ``log(step, metrics)``, ``on_end()``.
    """


@hookspec
def register_commands(app):
    """Add commands to the ``llm`` command line.

    ``app`` is the root :class:`typer.Typer`; add commands with ``@app.command()`` or
    sub-applications with ``app.add_typer(...)``. Keep heavy imports inside the command
    functions so that ``llm --help`` stays fast and Paddle-free.
    """


# --- decision hooks (firstresult) ---------------------------------------------------------

@hookspec(firstresult=True)
def select_backend(requested, registry):
    """Choose the hardware backend for a run; return its registered name or ``None``.

    ``requested`` is the user's ``--device`` value (``None`` or ``"auto"`` when not given),
    ``registry`` the :class:`paddlellm.plugin.registry.Registry`. The core's default (``trylast``)
    honours an explicit request and otherwise picks the available backend with the highest
    priority.
    """


@hookspec(firstresult=True)
def select_attention_kernel(spec, backend, registry):
    """Choose the attention kernel for one kind of call; return its name or ``None``.

    ``spec`` is an :class:`paddlellm.interfaces.AttentionSpec` describing the call (dtype,
    masks, cache layout, training), ``backend`` the active backend's name. The core's
    default picks the registered kernel with the highest priority whose ``supports(spec)``
    is true and which lists the backend (or ``"*"``) in ``backends``.
    """


@hookspec(firstresult=True)
def select_linear_kernel(spec, backend, registry):
    """Choose the kernel of one kind of quantized linear layer; return its name or ``None``.

    ``spec`` is a :class:`paddlellm.interfaces.LinearSpec`. The core's default picks the
    registered linear kernel with the highest priority whose ``supports(spec)`` is true and
    which lists the backend (or ``"*"``); ``None`` (no kernel) means the layer computes the
    product itself.
    """


# --- extension points used across plugins -------------------------------------------------

@hookspec(firstresult=True)
def wrap_base_layer_for_adapter(layer, adapter_name, method):
    """Let a plugin (e.g. a quantizer) supply the base layer that an adapter wraps.

    Called by PEFT methods before they wrap ``layer``; returns a replacement base layer or
    ``None`` to keep ``layer``. This is how QLoRA works without the LoRA plugin importing
    the quantization plugin.
    """
