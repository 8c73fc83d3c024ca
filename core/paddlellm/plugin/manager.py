"""The plugin manager: finds plugins through entry points and builds the registry.

* Every module named in the entry-point group ``paddlellm`` is a pluggy plugin.
* A plugin that fails to import (or whose registration hook raises) is reported with its
  name, distribution and error, and skipped; the rest still load.
* ``PADDLELLM_PLUGINS=a,b,...`` limits loading to entry points (or whole distributions) of
  those names. The core's built-in plugins always load.
* Two plugins of one kind under one name are an error naming both distributions.
* A plugin implementing a hook that does not exist (``register_model`` for
  ``register_models``) is caught by pluggy's ``check_pending()`` right after it registers:
  it is unregistered and reported as failed, with the hook's name and the closest real one.
* A registered target is checked against its kind's Protocol when it is first loaded
  (:func:`paddlellm.kinds.check_target`); :meth:`PluginManager.check_targets` loads them all
  (``llm plugins --check``).
* ``strict=True`` (``PADDLELLM_STRICT_PLUGINS=1``) turns every such report into an exception,
  for tests and plugin authors' CI; the default stays lenient so one broken plugin never
  takes the tool down.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from .. import hookspecs
from ..version import __version__
from ..errors import (BackendUnavailableError, DuplicatePluginError, PluginContractError,
                      PluginLoadError, UnknownPluginError)
from .registry import KINDS, PluginEntry, Registry

ENTRY_POINT_GROUP = "paddlellm"
ALLOW_ENV = "PADDLELLM_PLUGINS"
STRICT_ENV = "PADDLELLM_STRICT_PLUGINS"
CORE_DISTRIBUTION = "paddlellm"
BUILTIN_MODULES = ("paddlellm.plugin.builtin",)


@dataclass(frozen=True)
class FailedPlugin:
    """A plugin that could not be loaded, and why."""

    plugin: str
    distribution: str
    version: str
    error: str

    def as_dict(self) -> dict:
        return {"plugin": self.plugin, "distribution": self.distribution,
                "version": self.version, "error": self.error}


@dataclass(frozen=True)
class PluginSource:
    distribution: str
    version: str


def allow_list_from_env(environ: dict | None = None) -> set[str] | None:
    raw = (environ if environ is not None else os.environ).get(ALLOW_ENV, "")
    names = {n.strip() for n in raw.split(",") if n.strip()}
    return names or None


def strict_from_env(environ: dict | None = None) -> bool:
    raw = (environ if environ is not None else os.environ).get(STRICT_ENV, "")
    return raw.strip().lower() in ("1", "true", "yes", "on")


class PluginManager:
    """pluggy's manager plus discovery, provenance and the registry.

    ``strict`` (default: ``PADDLELLM_STRICT_PLUGINS``): raise instead of reporting a plugin
    that fails to import, implements an unknown hook or whose registration hook raises."""

    def __init__(self, *, entry_points: bool = True, allow: Iterable[str] | None = None,
                 builtins: bool = True, strict: bool | None = None) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict_from_env() if strict is None else strict
        self.failed: list[FailedPlugin] = []
        self.sources: dict[str, PluginSource] = {}
        self._registry: Registry | None = None
        if builtins:
            import importlib

            for module_name in BUILTIN_MODULES:
                self.register(importlib.import_module(module_name), module_name)
        if entry_points:
            allowed = set(allow) if allow is not None else allow_list_from_env()
            self.load_entry_points(allowed)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # -- discovery -------------------------------------------------------------------------
    def register(self, plugin: Any, name: str, distribution: str = CORE_DISTRIBUTION,
                 version: str = __version__) -> None:
        """Register a plugin object (module) under ``name``; invalidates the registry.

        Raises :class:`PluginContractError` (and leaves nothing registered) when the plugin
        implements a hook that does not exist or with arguments its spec does not have."""
        where = f"plugin '{name}' (distribution '{distribution}')"
        try:
            self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # e.g. an argument the hook does not pass
            raise PluginContractError(f"{where}: {' '.join(str(exc).split())}") from None
        try:
            self.pm.check_pending()  # hooks implemented without a spec: misspelt names
        except pluggy.PluginValidationError:
            unknown = self.unknown_hooks(plugin)
            self.pm.unregister(plugin)
            raise PluginContractError(f"{where}: {unknown_hooks_message(unknown)}") from None
        self.sources[name] = PluginSource(distribution, version)
        self._registry = None

    def unknown_hooks(self, plugin: Any) -> list[str]:
        """Names of hooks ``plugin`` implements that no hook spec declares."""
        return sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ()
                      if caller.spec is None
                      and not any(i.optionalhook for i in caller.get_hookimpls()
                                  if i.plugin is plugin))

    def _failed(self, failure: FailedPlugin) -> None:
        if self.strict:
            raise PluginLoadError(f"plugin '{failure.plugin}' from {failure.distribution} "
                                  f"failed to load: {failure.error}")
        self.failed.append(failure)

    def load_entry_points(self, allowed: set[str] | None = None) -> None:
        seen: set[tuple[str, str]] = set()
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else "?"
            dist_version = dist.version if dist is not None else "?"
            if (ep.name, ep.value) in seen:  # the same distribution found twice on sys.path
                continue
            seen.add((ep.name, ep.value))
            if allowed is not None and ep.name not in allowed and dist_name not in allowed:
                continue
            if self.pm.has_plugin(ep.name):
                other = self.sources.get(ep.name)
                self._failed(FailedPlugin(
                    ep.name, dist_name, dist_version,
                    f"a plugin named '{ep.name}' is already loaded from "
                    f"'{other.distribution if other else '?'}'"))
                continue
            try:
                module = ep.load()
                self.register(module, ep.name, dist_name, dist_version)
            except Exception as exc:  # a broken plugin must never take the tool down
                self._failed(FailedPlugin(ep.name, dist_name, dist_version,
                                          f"{type(exc).__name__}: {exc}"))

    # -- the registry ----------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        broken: set[str] = set()
        for hook_name, kind in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name in broken:
                    continue
                src = self.sources.get(impl.plugin_name, PluginSource("?", "?"))
                register = registry.register_callback(kind, impl.plugin_name, src.distribution,
                                                      src.version)
                try:
                    impl.function(**{a: register for a in impl.argnames})
                except DuplicatePluginError:
                    raise
                except Exception as exc:
                    broken.add(impl.plugin_name)
                    self._failed(FailedPlugin(impl.plugin_name, src.distribution,
                                              src.version, f"{hook_name}: {exc!r}"))
        return registry

    def check_targets(self, kind: str | None = None) -> list[FailedPlugin]:
        """Load every registered target (of ``kind``) and check it against its Protocol.

        Imports the plugins' heavy code (Paddle); returns one :class:`FailedPlugin` per entry
        that cannot be imported or lacks required members (raises instead when strict)."""
        problems = []
        for entry in self.registry.entries(kind):
            try:
                entry.load()
            except Exception as exc:
                failure = FailedPlugin(entry.plugin, entry.distribution, entry.version,
                                       f"{type(exc).__name__}: {exc}")
                if self.strict:
                    raise
                problems.append(failure)
        return problems

    # -- decisions -------------------------------------------------------------------------
    def select_backend(self, requested: str | None = None) -> PluginEntry:
        """The backend for this run (``--device``), as a registry entry."""
        name = self.hook.select_backend(requested=requested, registry=self.registry)
        if name is None:
            raise BackendUnavailableError(
                "no hardware backend is available; installed backends: "
                f"{', '.join(self.registry.names('backend')) or 'none'} "
                "(install paddlellm-backend-cpu, or run `llm doctor`)")
        return self.registry.get("backend", name)

    def select_attention_kernel(self, spec: Any, backend: str) -> PluginEntry:
        name = self.hook.select_attention_kernel(spec=spec, backend=backend,
                                                 registry=self.registry)
        if name is None:
            raise UnknownPluginError(
                f"no attention kernel supports {spec} on backend '{backend}'; installed "
                f"kernels: {', '.join(self.registry.names('attention_kernel')) or 'none'}")
        return self.registry.get("attention_kernel", name)


def unknown_hooks_message(names: Iterable[str]) -> str:
    """``unknown hook 'register_model' (did you mean 'register_models'?)`` for each name."""
    known = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "paddlellm_spec")]
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        parts.append(f"unknown hook '{name}'{hint}")
    return ("implements " + "; ".join(parts) + "; the hooks are listed in "
            "paddlellm.hookspecs and docs/plugins.md")


_default: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use)."""
    global _default
    if _default is None:
        _default = PluginManager()
    return _default


def reset_plugin_manager(manager: PluginManager | None = None) -> None:
    """Replace (or drop) the process-wide manager; for tests and embedding."""
    global _default
    _default = manager


def get_registry() -> Registry:
    return get_plugin_manager().registry
