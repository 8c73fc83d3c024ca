"""The table of plugin kinds: the one place that says which kinds exist.

Each :class:`Kind` names the registration hook a plugin implements, the
:mod:`paddlellm.interfaces` Protocol its registered target follows, and the ``llm run`` key
(a :class:`paddlellm.plugin.config.RunConfig` field) that selects a plugin of that kind, if any.
:data:`paddlellm.plugin.registry.KINDS`, :data:`paddlellm.plugin.config.PLUGIN_FIELDS` and the kinds table
of ``docs/plugins.md`` are all derived from (or checked against) :data:`KIND_TABLE`.

:func:`check_target` is what the registry runs when it loads a plugin's target: the object
must have every required member of its kind's Protocol (callable where the Protocol has a
method); optional members (:func:`paddlellm.interfaces.optional_members`) may be left out.
Importing this module does not import Paddle.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterator, Protocol

from . import interfaces as _ifaces
from .errors import PluginContractError


@dataclass(frozen=True)
class Kind:
    """One kind of plugin."""

    #: the kind's name, as ``llm plugins`` shows it and ``registry.get(kind, ...)`` takes it
    name: str
    #: the registration hook (in :mod:`paddlellm.hookspecs`) that registers plugins of this kind
    hook: str
    #: the Protocol (in :mod:`paddlellm.interfaces`) the registered target follows
    protocol: type
    #: the ``llm run`` key naming the plugin of this kind for a run (None: not chosen by a run)
    field: str | None = None
    #: True when the target is a *factory* (a class or callable called with the plugin's
    #: options) whose result follows ``protocol``; a class target is checked as a class
    factory: bool = False
    #: one line for the docs
    summary: str = ""
    #: True when the ``llm run`` key names several plugins of the kind (a list:
    #: ``--loggers tensorboard,plot``); their options are keyed ``"kind:name"``
    multiple: bool = False


KIND_TABLE: tuple[Kind, ...] = (
    Kind("model", "register_models", _ifaces.ModelFamily, "model",
         summary="a model family: config adapter, weight-name map, build(config)"),
    Kind("trainer_strategy", "register_trainer_strategies", _ifaces.TrainerStrategy, "strategy",
         factory=True, summary="how a run spreads over devices; target: f(options) -> strategy"),
    Kind("peft_method", "register_peft_methods", _ifaces.PeftMethod, "peft",
         summary="a parameter-efficient fine-tuning method that replaces modules of a model"),
    Kind("alignment_loss", "register_alignment_losses", _ifaces.AlignmentLoss, "align",
         summary="a preference loss on sequence log-probabilities (DPO family, KTO)"),
    Kind("merge_method", "register_merge_methods", _ifaces.MergeMethod, None,
         summary="merges checkpoints one tensor at a time (`llm merge --method`)"),
    Kind("quantizer", "register_quantizers", _ifaces.Quantizer, "quant_type",
         summary="quantizes a float model and loads its quantized checkpoints"),
    Kind("backend", "register_backends", _ifaces.Backend, "device",
         summary="a hardware backend (device selection, its Paddle build)"),
    Kind("attention_kernel", "register_attention_kernels", _ifaces.AttentionKernel,
         "attention_kernel", summary="scaled dot-product attention with the decoder masks"),
    Kind("stage", "register_stages", _ifaces.Stage, "stage",
         summary="a training stage for `llm run --stage` (pretrain, sft, align)"),
    Kind("kv_cache_layout", "register_kv_cache_layouts", _ifaces.KVCacheLayout, None,
         summary="how a model stores its KV cache (float, int8); named by model.kv_cache_layout"),
    Kind("linear_kernel", "register_linear_kernels", _ifaces.WeightOnlyLinearKernel, None,
         summary="a compiled product for weight-only quantized linear layers (int8/int4)"),
    Kind("reward", "register_rewards", _ifaces.Reward, "reward", factory=True,
         summary="scores completions for RLHF: a rule function or a reward-model/server class"),
    Kind("logger", "register_loggers", _ifaces.TrainingLogger, "loggers", factory=True,
         multiple=True, summary="receives training metrics (TensorBoard, VisualDL, plots, "
         "W&B-style services); target: f(options) -> logger"),
)

_BY_NAME = {k.name: k for k in KIND_TABLE}


def get_kind(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (``KeyError`` for an unknown kind)."""
    return _BY_NAME[name]


def hook_kinds() -> dict[str, str]:
    """Registration hook name -> kind name."""
    return {k.hook: k.name for k in KIND_TABLE}


def multiple_kinds() -> set[str]:
    """The kinds whose ``llm run`` key names a list of plugins."""
    return {k.name for k in KIND_TABLE if k.multiple}


def options_key(kind: str, name: str) -> str:
    """The :attr:`paddlellm.plugin.config.RunConfig.plugin_options` key of a selected plugin: its
    kind, or ``"kind:name"`` for a kind whose ``llm run`` key names several
    (``logger:tensorboard``)."""
    return f"{kind}:{name}" if kind in multiple_kinds() else kind


def field_kinds() -> dict[str, str]:
    """``llm run`` key -> kind name, for the kinds a run selects."""
    return {k.field: k.name for k in KIND_TABLE if k.field}


# --- protocol members and the load-time check ---------------------------------------------------

def protocol_members(protocol: type) -> dict[str, bool]:
    """The members a Protocol declares: name -> whether it is a method (must be callable).

    Data members are the annotations, methods the functions and properties of the class
    bodies (``__call__`` included, other dunders and private names excluded), over the
    Protocol and its Protocol bases."""
    members: dict[str, bool] = {}
    for base in reversed(protocol.__mro__):
        if base in (object, Protocol) or not getattr(base, "_is_protocol", False):
            continue
        for name in base.__dict__.get("__annotations__", {}):
            if not name.startswith("_"):
                members.setdefault(name, False)
        for name, value in base.__dict__.items():
            if name.startswith("_") and name != "__call__":
                continue
            if isinstance(value, property):
                members[name] = False
            elif inspect.isfunction(value) or isinstance(value, (staticmethod, classmethod)):
                members[name] = True
    return members


def missing_members(obj: Any, protocol: type) -> list[str]:
    """Required members of ``protocol`` that ``obj`` lacks (or has but cannot call), sorted.

    A member that :func:`paddlellm.interfaces.optional_members` declares optional is never
    missing."""
    optional = _ifaces.optional_members(protocol)
    missing = []
    for name, is_method in protocol_members(protocol).items():
        if name in optional:
            continue
        if name == "__call__":
            if not callable(obj):
                missing.append("__call__ (the object is not callable)")
            continue
        try:
            value = inspect.getattr_static(obj, name)
        except AttributeError:
            if not hasattr(obj, name):  # a __getattr__ may still supply it
                missing.append(name)
            continue
        if is_method and not (callable(value) or isinstance(value, (staticmethod, classmethod))):
            missing.append(f"{name} (not callable)")
    return sorted(missing)


def check_target(kind: str, obj: Any, who: str = "") -> Any:
    """Check a loaded plugin target against its kind's Protocol; return it unchanged.

    ``who`` names the plugin for the message (``"alignment_loss 'mine' (plugin 'x', distribution
    'y')"``). Raises :class:`paddlellm.errors.PluginContractError` listing the missing members."""
    spec = _BY_NAME.get(kind)
    if spec is None:
        return obj
    who = who or f"{kind} plugin"
    protocol = spec.protocol
    if spec.factory:
        if not callable(obj):
            raise PluginContractError(
                f"{who}: the target must be a factory (a class or function called with the "
                f"plugin's options) returning a {protocol.__name__}; got {type(obj).__name__}")
        if not inspect.isclass(obj):
            return obj  # a plain factory function: its result is checked where it is called
    missing = missing_members(obj, protocol)
    if missing:
        raise PluginContractError(
            f"{who} does not follow paddlellm.interfaces.{protocol.__name__}: missing "
            f"{', '.join(missing)} (see docs/plugins.md, kind '{kind}')")
    return obj


def iter_kinds() -> Iterator[Kind]:
    return iter(KIND_TABLE)
