"""The generic PEFT API: apply, save, load, merge and switch off adapters of any method.

Methods are plugins (``register_peft_methods``, kind ``peft_method``) following
:class:`paddlellm.interfaces.PeftMethod`; this module only dispatches by name, so stages,
``AutoModelForCausalLM.from_pretrained(base, lora_path=...)``, ``llm export`` and alignment
(``disable_adapters`` gives DPO its reference model) work with every method::

    model = apply_peft(model, "lora", {"lora_rank": 8})
    save_adapter(model, "out")            # adapter_config.json + adapter_model.safetensors
    model = load_adapter(base, "out")     # peft_type in adapter_config.json picks the method
    with disable_adapters(model): ...     # the base model's outputs
    model = merge_adapter(model)          # plain layers again

``load_serving_adapters(model, [(name, folder), ...])`` loads several adapters unmerged on one
base for serving, each request choosing its own (``llm serve --lora_modules``).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from ..errors import ConfigError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KIND = "peft_method"
#: method-config keys that name an adapter directory to start from (``--lora_path``)
ADAPTER_PATH_KEYS = ("lora_path", "prefix_path", "lokr_path", "vera_path", "mora_path",
                     "reft_path", "adapter_path")


def _registry():
    from ..plugin.manager import get_plugin_manager

    return get_plugin_manager().registry


def unwrap(model):
    """The model inside a strategy wrapper (``paddle.DataParallel`` keeps it in ``_layers``)."""
    return getattr(model, "_layers", model)


def get_peft_method(name: str):
    """The registered PEFT method called ``name`` (unknown names list the installed ones)."""
    return _registry().load(KIND, name)


def method_for_peft_type(peft_type: str):
    """The registered method whose ``peft_type`` is ``peft_type`` (peft's ``LORA``, ...)."""
    known = {}
    for entry in _registry().entries(KIND):
        method = entry.load()
        ptype = getattr(method, "peft_type", None)
        if ptype:
            known.setdefault(str(ptype).upper(), method)
    method = known.get(str(peft_type).upper())
    if method is None:
        raise ConfigError(f"no installed PEFT method reads peft_type '{peft_type}'; "
                          f"installed: {', '.join(sorted(known)) or 'none'}")
    return method


def method_config(method, config: Any = None):
    """``config`` as the method's pydantic ``config_class`` (a dict or None is validated)."""
    cls = method.config_class
    if config is None:
        return cls()
    if isinstance(config, cls):
        return config
    if hasattr(config, "model_dump"):
        config = config.model_dump()
    if not isinstance(config, Mapping):
        raise TypeError(f"PEFT config must be a {cls.__name__} or a mapping, got {type(config).__name__}")
    from ..plugin.config import validate_model

    values = {k: v for k, v in config.items() if v is not None}  # None: the default
    return validate_model(cls, values, f"options of PEFT method '{method.name}'")


def freeze(model) -> None:
    """Stop gradients of every parameter (the base model's, before adapters are added)."""
    for p in model.parameters():
        p.stop_gradient = True


def apply_peft(model, name: str, config: Any = None):
    """Freeze ``model`` and add the adapters of method ``name``; returns the adapted model.

    Sets ``model.peft_method`` (the method's name) and ``model.peft_config``.
    """
    method = get_peft_method(name)
    cfg = method_config(method, config)
    inner = unwrap(model)
    if getattr(inner, "peft_method", None):
        raise ConfigError(f"the model already carries '{inner.peft_method}' adapters; merge "
                          "them (merge_adapter) before applying another method")
    freeze(inner)
    inner = method.apply(inner, cfg)
    inner.peft_method, inner.peft_config = method.name, cfg
    return inner


class ServingAdapters:
    """Adapters served unmerged on one base (``llm serve --lora_modules``): their names, in
    index order (index ``k + 1`` is ``names[k]``; ``0`` is the base), their folders, and
    :meth:`rows`, which picks the adapter of each token row of the forwards inside it."""

    def __init__(self, names: tuple[str, ...], paths: tuple[str, ...], selector: Any) -> None:
        self.names, self.paths, self._selector = names, paths, selector
        self._index = {name: k + 1 for k, name in enumerate(names)}

    def index(self, name: str | None) -> int:
        """``0`` for ``None`` (the base), else the adapter's index; unknown names are a
        ``ValueError`` listing the served ones."""
        if name is None:
            return 0
        try:
            return self._index[name]
        except KeyError:
            raise ValueError(f"unknown adapter '{name}'; served adapters: "
                             f"{', '.join(self.names) or 'none'}") from None

    @contextlib.contextmanager
    def rows(self, indices) -> Iterator[None]:
        """Inside, token row ``n`` of the model's input uses adapter ``indices[n]`` (0: the
        base); outside, every row uses the base."""
        self._selector.set_rows(indices)
        try:
            yield
        finally:
            self._selector.set_rows(None)


def _same_base(adapter_base: str, base_names: Iterable[str]) -> bool:
    """Whether an adapter's ``base_model_name_or_path`` names the served model: the same
    folder, or the same last path component (a hub id ``org/name`` served from ``.../name``)."""
    names = {str(n) for n in base_names if n}
    resolved = {str(Path(n).resolve()) for n in names if Path(n).exists()}
    if adapter_base in names or (Path(adapter_base).exists()
                                 and str(Path(adapter_base).resolve()) in resolved):
        return True
    leaf = adapter_base.rstrip("/").rsplit("/", 1)[-1]
    return bool(leaf) and leaf in {Path(n).name for n in names}


def load_serving_adapters(model, adapters: Iterable[tuple[str, str | Path]],
                          base_names: Iterable[str] = ()) -> ServingAdapters:
    """Load the peft-format adapters ``[(name, folder)]`` unmerged onto ``model`` so that
    requests for each of them (and for the base) run in one batch; the base weights are
    not changed. The method (named by each ``peft_type``) must offer
    ``load_serving_adapters`` (LoRA does). An adapter whose ``base_model_name_or_path`` is
    not one of ``base_names`` (the served model's path and names), or whose modules or
    shapes do not fit ``model``, is refused with an error naming its folder."""
    adapters = [(str(name), str(path)) for name, path in adapters]
    base_names = [str(n) for n in base_names if n]
    methods = []
    for name, path in adapters:
        data = read_adapter_config(path)
        base = data.get("base_model_name_or_path")
        if base and base_names and not _same_base(str(base), base_names):
            raise ConfigError(f"--lora_modules {name}={path}: the adapter was trained on "
                              f"'{base}' but this server's model is '{base_names[0]}'; serve "
                              f"it with its own base (if it is the same model under another "
                              f"name, set base_model_name_or_path in {path}/{ADAPTER_CONFIG})")
        method = method_for_peft_type(data["peft_type"])
        if not hasattr(method, "load_serving_adapters"):
            raise ConfigError(f"--lora_modules {name}={path}: {data['peft_type']} adapters "
                              f"cannot be served unmerged; serve it merged with --lora_path")
        methods.append(method)
    if not adapters:
        raise ValueError("no adapters to load")
    if any(m is not methods[0] for m in methods):
        raise ConfigError("--lora_modules: every served adapter must be of one PEFT method; "
                          f"got {', '.join(sorted({m.name for m in methods}))}")
    try:
        selector = methods[0].load_serving_adapters(unwrap(model), [p for _, p in adapters])
    except ValueError as exc:  # the plugin's AdapterError names the folder
        raise ConfigError(f"--lora_modules: {exc}") from None
    return ServingAdapters(tuple(n for n, _ in adapters), tuple(p for _, p in adapters), selector)


def is_peft_model(model) -> bool:
    return bool(getattr(unwrap(model), "peft_method", None))


def _method_of(model):
    inner = unwrap(model)
    name = getattr(inner, "peft_method", None)
    if not name:
        raise ValueError("the model has no adapters (apply_peft or load_adapter first)")
    return inner, get_peft_method(name)


def save_adapter(model, directory: str | Path) -> None:
    """Write the adapter weights in the ``peft`` format (``adapter_config.json`` +
    ``adapter_model.safetensors``); the base weights are not written."""
    inner, method = _method_of(model)
    Path(directory).mkdir(parents=True, exist_ok=True)
    method.save_adapter(inner, str(directory))


def read_adapter_config(directory: str | Path) -> dict:
    path = Path(directory) / ADAPTER_CONFIG
    from ..checkpoint import CheckpointNotFoundError, read_json

    if not path.is_file():
        raise CheckpointNotFoundError(f"no {ADAPTER_CONFIG} in {directory} (not a peft-format adapter)")
    data = read_json(path)  # malformed, binary or too deep: an error naming the file
    if not isinstance(data, dict) or "peft_type" not in data:
        raise ConfigError(f"{path}: expected an object with a 'peft_type' key")
    return data


def load_adapter(model, directory: str | Path):
    """Load an adapter directory onto ``model``; returns the adapted model.

    On a plain model the method named by ``peft_type`` adds its layers (base frozen); on a
    model that already carries that method's adapters (a resumed run) the weights are
    loaded into them.
    """
    data = read_adapter_config(directory)
    method = method_for_peft_type(data["peft_type"])
    inner = unwrap(model)
    current = getattr(inner, "peft_method", None)
    if current and get_peft_method(current) is not method:
        raise ConfigError(f"{directory} holds a {data['peft_type']} adapter but the model "
                          f"carries '{current}' adapters")
    if not current:
        freeze(inner)
    inner = method.load_adapter(inner, str(directory))
    inner.peft_method = method.name
    if getattr(inner, "peft_config", None) is None:
        inner.peft_config = None
    return inner


def merge_adapter(model, unload: bool = True):
    """Merge the adapters into the base weights and unload them: plain layers again.

    ``unload=False`` merges in place and keeps the adapter layers (``unmerge_adapter``
    undoes it), for methods whose ``merge`` takes ``unload``.
    """
    inner, method = _method_of(model)
    if not unload:
        return method.merge(inner, unload=False)
    inner = method.merge(inner)
    inner.peft_method, inner.peft_config = None, None
    for p in inner.parameters():
        p.stop_gradient = False
    return inner


def unmerge_adapter(model):
    """Undo ``merge_adapter(model, unload=False)`` (methods with an ``unmerge``, e.g. LoRA)."""
    inner, method = _method_of(model)
    if not hasattr(method, "unmerge"):
        raise ValueError(f"PEFT method '{method.name}' cannot unmerge")
    return method.unmerge(inner)


@contextlib.contextmanager
def batch_context(model, batch: Mapping[str, Any]) -> Iterator[None]:
    """Around the forward of a training/evaluation ``batch``: lets the model's PEFT method see
    the batch when it defines ``batch_context(model, batch)`` (ReFT reads where each row's
    prompt ends from ``labels``); otherwise nothing happens."""
    inner = unwrap(model)
    name = getattr(inner, "peft_method", None)
    hook = getattr(get_peft_method(name), "batch_context", None) if name else None
    if hook is None:
        yield
        return
    with hook(inner, batch):
        yield


def adapter_layers(model) -> list:
    """Every sublayer that follows the adapter contract (has ``adapter_enabled``)."""
    return [layer for _, layer in unwrap(model).named_sublayers(include_self=True)
            if hasattr(layer, "adapter_enabled")]


@contextlib.contextmanager
def disable_adapters(model) -> Iterator[Any]:
    """Inside, every adapter layer computes the base output only (DPO's reference model)."""
    layers = adapter_layers(model)
    before = [layer.adapter_enabled for layer in layers]
    try:
        for layer in layers:
            layer.adapter_enabled = False
        yield model
    finally:
        for layer, state in zip(layers, before):
            layer.adapter_enabled = state


def trainable_parameter_report(model) -> tuple[int, int, str]:
    """``(trainable, total, text)``; text as peft prints it."""
    trainable = total = 0
    for p in unwrap(model).parameters():
        n = 1
        for d in p.shape:
            n *= int(d)
        total += n
        if not p.stop_gradient:
            trainable += n
    pct = 100.0 * trainable / max(total, 1)
    return trainable, total, (f"trainable params: {trainable:,} || all params: {total:,} || "
                              f"trainable%: {pct:.4f}")


# --- what the training stages use -----------------------------------------------------------

def adapter_init_path(options: Any) -> str | None:
    """``--lora_path`` (or another method's adapter-path key) when the run set one."""
    for key in ADAPTER_PATH_KEYS:
        value = getattr(options, key, None)
        if value:
            return str(value)
    return None


def setup_run_peft(model, config, options, resume_dir: str | Path | None = None):
    """Apply ``--peft`` to a run's model, then load ``resume_dir`` (a checkpoint of this run)
    or the method's adapter path (``--lora_path``); prints the trainable-parameter report.
    Without ``--peft`` the model is returned as is (the report is printed too)."""
    if config.peft:
        model = apply_peft(model, config.peft, options)
        source = str(resume_dir) if resume_dir else adapter_init_path(options)
        if source:
            model = load_adapter(model, source)
    _, _, text = trainable_parameter_report(model)
    print(f"[{config.peft or 'full fine-tuning'}] {text}", flush=True)
    return model


def run_weights_source(config, resume_dir, default) -> str:
    """Where a run loads its model weights: with ``--peft`` the base checkpoint (a checkpoint
    of a PEFT run holds only the adapter), else the resumed checkpoint."""
    if config.peft:
        return str(config.model_name_or_path or default)
    return str(resume_dir or config.model_name_or_path or default)


def save_model_or_adapter(model, tokenizer, directory: str) -> None:
    """A run's output: the adapter (peft format) for a PEFT model, else the whole model."""
    if is_peft_model(model):
        save_adapter(model, directory)
        tokenizer.save_pretrained(directory)
        return
    model.save_pretrained(directory)  # the Hugging Face layout: weights, config, tokenizer
    tokenizer.save_pretrained(directory)
