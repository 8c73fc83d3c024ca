"""The plugin manager and registry: discovery, provenance, failures, allow-list, duplicates."""
from __future__ import annotations

import sys
import types

import pytest

from paddlellm import hookimpl
from paddlellm.errors import DuplicatePluginError, PluginLoadError, UnknownPluginError
from paddlellm.plugin.manager import PluginManager
from paddlellm.plugin.registry import Registry, PluginEntry

from helpers import make_fake_distribution


def _module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def test_installed_distributions_provide_the_core_plugins():
    manager = PluginManager()
    reg = manager.registry
    assert "cpu" in reg.names("backend") and "gpu" in reg.names("backend")
    assert reg.names("attention_kernel")[:1] and "reference" in reg.names("attention_kernel")
    assert "single" in reg.names("trainer_strategy")
    cpu = reg.get("backend", "cpu")
    assert cpu.distribution == "paddlellm-backend-cpu" and cpu.version == "0.1.0"
    assert manager.failed == []


def test_duplicate_names_name_both_distributions():
    manager = PluginManager(entry_points=False)
    manager.register(_module("a", register_merge_methods=lambda register: register("avg", dict)),
                     "plugin-a", "dist-alpha", "1.0")
    manager.register(_module("b", register_merge_methods=lambda register: register("avg", list)),
                     "plugin-b", "dist-beta", "2.0")
    with pytest.raises(DuplicatePluginError) as info:
        manager.registry
    msg = str(info.value)
    assert "dist-alpha" in msg and "dist-beta" in msg and "'avg'" in msg


def test_alias_collision_is_a_duplicate_too():
    reg = Registry()
    reg.add(PluginEntry("model", "qwen", "x:y", "p1", "d1", "1", aliases=("qwen2",)))
    with pytest.raises(DuplicatePluginError, match="d1"):
        reg.add(PluginEntry("model", "qwen2", "x:z", "p2", "d2", "1"))
    assert reg.get("model", "qwen2").name == "qwen"


def test_unknown_name_lists_installed_and_suggests():
    reg = Registry()
    for name in ("llama", "qwen", "mistral"):
        reg.add(PluginEntry("model", name, "x:y", "p", "d", "1"))
    with pytest.raises(UnknownPluginError) as info:
        reg.get("model", "qwn")
    msg = str(info.value)
    assert "unknown model 'qwn'" in msg and "did you mean 'qwen'" in msg
    assert "llama, mistral, qwen" in msg


def test_targets_load_lazily_and_report_failures():
    reg = Registry()
    ok = reg.add(PluginEntry("stage", "json", "json:dumps", "p", "d", "1"))  # a callable
    bad = reg.add(PluginEntry("stage", "nope", "no_such_module_xyz:thing", "p", "dist-x", "1"))
    assert ok._loaded is None and ok.load()([1]) == "[1]"
    with pytest.raises(PluginLoadError, match="dist-x"):
        bad.load()


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(tmp_path, monkeypatch):
    site = make_fake_distribution(
        tmp_path / "site", "broken-plugin", "0.3", {
            "broken_mod": "raise RuntimeError('boom at import')\n",
            "good_mod": """
                from paddlellm import hookimpl

                @hookimpl
                def register_merge_methods(register):
                    register("good-avg", "json:dumps")
            """,
        },
        {"broken": "broken_mod", "good": "good_mod"})
    monkeypatch.syspath_prepend(str(site))
    manager = PluginManager()
    failed = {f.plugin: f for f in manager.failed}
    assert failed["broken"].distribution == "broken-plugin"
    assert "boom at import" in failed["broken"].error
    assert manager.registry.get("merge_method", "good-avg").distribution == "broken-plugin"
    assert "cpu" in manager.registry.names("backend")  # the rest still loads


def test_a_registration_hook_that_raises_is_reported(tmp_path):
    def bad(register):
        raise ValueError("cannot register")

    manager = PluginManager(entry_points=False)
    manager.register(_module("bad", register_quantizers=bad), "bad-plugin", "dist-bad", "0.1")
    assert manager.registry.names("quantizer") == []
    assert manager.failed[0].plugin == "bad-plugin" and "cannot register" in manager.failed[0].error


def test_allow_list_limits_what_loads(monkeypatch):
    monkeypatch.setenv("PADDLELLM_PLUGINS", "cpu,paddlellm-kernels-reference")
    reg = PluginManager().registry
    assert reg.names("backend") == ["cpu"]
    assert reg.names("attention_kernel") == ["reference"]
    assert reg.names("trainer_strategy") == []
    monkeypatch.setenv("PADDLELLM_PLUGINS", "")
    assert "single" in PluginManager().registry.names("trainer_strategy")


def test_firstresult_hook_lets_a_plugin_override_backend_choice():
    manager = PluginManager()

    class Picky:
        @hookimpl
        def select_backend(self, requested, registry):
            return "gpu" if requested == "pick-gpu" else None

    manager.register(Picky(), "picky")
    assert manager.hook.select_backend(requested="pick-gpu", registry=manager.registry) == "gpu"
    assert manager.select_backend(None).name == "cpu"  # the default still decides otherwise


def test_paddle_is_not_imported_by_discovery():
    # Run in a fresh interpreter: this test process may already have imported paddle.
    import subprocess

    code = ("import sys; from paddlellm.plugin.manager import PluginManager; m = PluginManager(); "
            "m.registry.entries(); assert 'paddle' not in sys.modules, 'paddle imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
