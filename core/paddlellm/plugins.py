"""The plugin manager: finds plugins through entry points and builds the registry.

* Every module named in the entry-point group ``paddlellm`` is a pluggy plugin.
* A plugin that fails to import (or whose registration hook raises) is reported with its
  name, distribution and error, and skipped; the rest still load.
* ``PADDLELLM_PLUGINS=a,b,...`` limits loading to entry points (or whole distributions) of
  those names. The core's built-in plugins always load.
* Two plugins of one kind under one name are an error naming both distributions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Iterable

import pluggy

from . import __version__, hookspecs
from .errors import BackendUnavailableError, DuplicatePluginError, UnknownPluginError
from .registry import KINDS, PluginEntry, Registry

ENTRY_POINT_GROUP = "paddlellm"
ALLOW_ENV = "PADDLELLM_PLUGINS"
CORE_DISTRIBUTION = "paddlellm"
BUILTIN_MODULES = ("paddlellm.builtin",)


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


class PluginManager:
    """pluggy's manager plus discovery, provenance and the registry."""

    def __init__(self, *, entry_points: bool = True, allow: Iterable[str] | None = None,
                 builtins: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
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
        """Register a plugin object (module) under ``name``; invalidates the registry."""
        self.pm.register(plugin, name=name)
        self.sources[name] = PluginSource(distribution, version)
        self._registry = None

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
                self.failed.append(FailedPlugin(
                    ep.name, dist_name, dist_version,
                    f"a plugin named '{ep.name}' is already loaded from "
                    f"'{other.distribution if other else '?'}'"))
                continue
            try:
                module = ep.load()
                self.register(module, ep.name, dist_name, dist_version)
            except Exception as exc:  # a broken plugin must never take the tool down
                self.failed.append(FailedPlugin(ep.name, dist_name, dist_version,
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
                    self.failed.append(FailedPlugin(impl.plugin_name, src.distribution,
                                                    src.version, f"{hook_name}: {exc!r}"))
        return registry

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
