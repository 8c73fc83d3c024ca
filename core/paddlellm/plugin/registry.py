"""One generic registry for every plugin kind.

Entries are cheap records (:class:`PluginEntry`); the object behind an entry is imported
on first :meth:`PluginEntry.load`, so listing plugins costs no heavy import.
"""
from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from ..errors import DuplicatePluginError, PluginLoadError, UnknownPluginError
from ..kinds import check_target, hook_kinds

#: registration hook name -> kind name (the ``kind`` shown by ``llm plugins``), from the one
#: table of kinds, :data:`paddlellm.kinds.KIND_TABLE`
KINDS: dict[str, str] = hook_kinds()


@dataclass
class PluginEntry:
    """A registered plugin object of one kind."""

    kind: str
    name: str
    target: Any  # the object, or "module:attr" imported on first load()
    plugin: str  # the entry point (or built-in module) that registered it
    distribution: str
    version: str
    aliases: tuple[str, ...] = ()
    description: str = ""
    priority: int = 0
    #: the plugin's options: a pydantic model class, or ``"module:Class"`` imported on first
    #: use (a light module, so ``llm run --help`` need not import the plugin's heavy code);
    #: None means "the loaded object's ``config_class``, if any"
    options: Any = None
    _loaded: Any = field(default=None, repr=False)

    def load(self) -> Any:
        """Import (once), check against the kind's Protocol and return the registered object.

        Raises :class:`PluginLoadError` when the target cannot be imported and
        :class:`~paddlellm.errors.PluginContractError` (naming the plugin, its distribution
        and the missing members) when it does not follow its kind's Protocol."""
        if self._loaded is None:
            obj = import_target(self.target, self) if isinstance(self.target, str) else self.target
            self._loaded = check_target(self.kind, obj, self.who())
        return self._loaded

    def who(self) -> str:
        """``alignment_loss 'mine' (plugin 'x', distribution 'y')`` for messages."""
        return (f"{self.kind} '{self.name}' (plugin '{self.plugin}', distribution "
                f"'{self.distribution}')")

    def options_class(self) -> Any:
        """The pydantic model of this plugin's options (its flat ``llm run`` keys), or None.

        The declared ``options`` when given, else the loaded object's ``config_class``."""
        if self.options is not None:
            return import_target(self.options, self) if isinstance(self.options, str) else self.options
        return getattr(self.load(), "config_class", None)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "plugin": self.plugin,
            "aliases": list(self.aliases),
            "description": self.description,
            "target": self.target if isinstance(self.target, str) else _qualname(self.target),
        }


def _qualname(obj: Any) -> str:
    mod = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{mod}:{name}"


def import_target(target: str, entry: PluginEntry | None = None) -> Any:
    """Resolve ``"package.module:attr.sub"`` to an object."""
    module_name, _, attr = target.partition(":")
    try:
        obj = importlib.import_module(module_name)
        for part in filter(None, attr.split(".")):
            obj = getattr(obj, part)
    except Exception as exc:  # report which plugin failed, not just the import error
        who = f"{entry.kind} '{entry.name}' from {entry.distribution}" if entry else target
        raise PluginLoadError(f"cannot load {who} ({target}): {exc!r}") from exc
    return obj


class Registry:
    """Plugins by kind and name; aliases resolve to their entry."""

    def __init__(self) -> None:
        self._entries: dict[str, dict[str, PluginEntry]] = {k: {} for k in KINDS.values()}
        self._aliases: dict[str, dict[str, str]] = {k: {} for k in KINDS.values()}

    # -- writing ---------------------------------------------------------------------------
    def add(self, entry: PluginEntry) -> PluginEntry:
        kind = self._check_kind(entry.kind)
        for key in (entry.name, *entry.aliases):
            existing = self._lookup(kind, key)
            if existing is not None:
                raise DuplicatePluginError(
                    f"two {kind} plugins are named '{key}': one from distribution "
                    f"'{existing.distribution}' (plugin '{existing.plugin}'), one from "
                    f"distribution '{entry.distribution}' (plugin '{entry.plugin}'); "
                    "uninstall one or limit loading with PADDLELLM_PLUGINS"
                )
        self._entries[kind][entry.name] = entry
        for alias in entry.aliases:
            self._aliases[kind][alias] = entry.name
        return entry

    def register_callback(
        self, kind: str, plugin: str, distribution: str, version: str
    ) -> Callable[..., PluginEntry]:
        """The ``register`` callback handed to one plugin's registration hook."""

        def register(
            name: str,
            target: Any,
            *,
            aliases: Iterable[str] = (),
            description: str = "",
            priority: int = 0,
            options: Any = None,
        ) -> PluginEntry:
            if not isinstance(name, str) or not name:
                raise ValueError(f"plugin '{plugin}' registered a {kind} without a name")
            return self.add(
                PluginEntry(
                    kind=kind,
                    name=name,
                    target=target,
                    plugin=plugin,
                    distribution=distribution,
                    version=version,
                    aliases=tuple(aliases),
                    description=description,
                    priority=priority,
                    options=options,
                )
            )

        return register

    # -- reading ---------------------------------------------------------------------------
    def kinds(self) -> list[str]:
        return list(self._entries)

    def names(self, kind: str) -> list[str]:
        return sorted(self._entries[self._check_kind(kind)])

    def entries(self, kind: str | None = None) -> list[PluginEntry]:
        kinds = [self._check_kind(kind)] if kind else list(self._entries)
        return [e for k in kinds for _, e in sorted(self._entries[k].items())]

    def has(self, kind: str, name: str) -> bool:
        return self._lookup(self._check_kind(kind), name) is not None

    def get(self, kind: str, name: str) -> PluginEntry:
        """The entry of ``kind`` called ``name`` (or an alias); unknown names list the valid ones."""
        kind = self._check_kind(kind)
        entry = self._lookup(kind, name)
        if entry is None:
            raise UnknownPluginError(unknown_name_message(kind, name, self.all_names(kind)))
        return entry

    def load(self, kind: str, name: str) -> Any:
        return self.get(kind, name).load()

    def all_names(self, kind: str) -> list[str]:
        kind = self._check_kind(kind)
        return sorted([*self._entries[kind], *self._aliases[kind]])

    def _lookup(self, kind: str, name: str) -> PluginEntry | None:
        name = self._aliases[kind].get(name, name)
        return self._entries[kind].get(name)

    def _check_kind(self, kind: str) -> str:
        if kind not in self._entries:
            raise UnknownPluginError(unknown_name_message("plugin kind", kind, list(self._entries)))
        return kind


def unknown_name_message(what: str, name: str, valid: Iterable[str]) -> str:
    """``unknown model 'qwn'; did you mean 'qwen'? installed: gpt2, llama, qwen``."""
    valid = sorted(set(valid))
    close = difflib.get_close_matches(str(name), valid, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    listing = ", ".join(valid) if valid else "none installed"
    return f"unknown {what} '{name}'{hint} valid: {listing}"
