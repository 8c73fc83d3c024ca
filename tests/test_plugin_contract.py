"""The plugin contract is enforced: one table of kinds, Protocol checks when a target loads,
misspelt hooks reported, and plugins that import only the core's public API."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

from helpers import make_fake_distribution
from paddlellm import api, hookimpl, hookspecs, interfaces
from paddlellm.plugin.config import PLUGIN_FIELDS, RunConfig
from paddlellm.errors import PluginContractError, PluginLoadError
from paddlellm.kinds import KIND_TABLE, check_target, missing_members, protocol_members
from paddlellm.plugin.manager import PluginManager
from paddlellm.plugin.registry import KINDS, PluginEntry, Registry

ROOT = Path(__file__).resolve().parents[1]


# --- one table of kinds -----------------------------------------------------------------------

def test_registry_config_and_hookspecs_follow_the_table_of_kinds():
    assert KINDS == {k.hook: k.name for k in KIND_TABLE}
    assert PLUGIN_FIELDS == {k.field: k.name for k in KIND_TABLE if k.field}
    for kind in KIND_TABLE:
        assert hasattr(getattr(hookspecs, kind.hook), "paddlellm_spec"), kind.hook
        assert getattr(interfaces, kind.protocol.__name__) is kind.protocol
        assert kind.field is None or kind.field in RunConfig.model_fields
    assert Registry().kinds() == [k.name for k in KIND_TABLE]


def test_docs_list_every_kind_with_its_hook_protocol_and_key():
    text = (ROOT / "docs" / "plugins.md").read_text()
    rows = {}
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if line.startswith("| `register_") and len(cells) >= 4:
            rows[cells[0]] = cells
    for kind in KIND_TABLE:
        assert kind.hook in rows, f"docs/plugins.md's hook table lacks {kind.hook}"
        row = " ".join(rows[kind.hook])
        assert kind.name in row and kind.protocol.__name__ in row, row
        if kind.field:
            assert f"--{kind.field}" in row, row


# --- Protocol checks when a target loads ------------------------------------------------------

class _HalfLoss:
    """Follows the old, incomplete AlignmentLoss Protocol: no resolve, no needs_reference_for."""

    name = "half"
    needs_reference = True

    def __call__(self, batch, options):
        return 0.0, {}


def test_a_target_missing_protocol_members_is_an_error_naming_them():
    reg = Registry()
    register = reg.register_callback("alignment_loss", "half-plugin", "half-dist", "0.1")
    register("half", _HalfLoss())
    with pytest.raises(PluginContractError) as err:
        reg.load("alignment_loss", "half")
    message = str(err.value)
    for part in ("alignment_loss 'half'", "half-plugin", "half-dist", "AlignmentLoss",
                 "needs_reference_for", "resolve"):
        assert part in message, (part, message)
    assert "kind" not in message.split("missing")[1].split("(see")[0]  # optional: not required


def test_a_member_that_must_be_a_method_is_checked_callable():
    loss = types.SimpleNamespace(name="x", resolve=lambda o, n: o, needs_reference_for=1)
    assert missing_members(loss, interfaces.AlignmentLoss) == [
        "__call__ (the object is not callable)", "needs_reference_for (not callable)"]


def test_optional_members_have_documented_defaults():
    assert interfaces.optional_members(interfaces.AlignmentLoss)["kind"] == "pairwise"
    assert interfaces.optional_members(interfaces.Quantizer)["needs_calibration"] is False
    for kind in KIND_TABLE:
        members = protocol_members(kind.protocol)
        assert members, kind.name
        for name in interfaces.optional_members(kind.protocol):
            assert name not in members, f"{kind.protocol.__name__}.{name} is optional but declared"
            assert name in (kind.protocol.__doc__ or ""), f"document optional {name}"


def test_factories_are_checked_as_callables_and_classes_by_their_members():
    with pytest.raises(PluginContractError, match="must be a factory"):
        check_target("trainer_strategy", object(), "trainer_strategy 'x'")

    class NotAStrategy:
        name = "x"

    with pytest.raises(PluginContractError, match="missing.*wrap_model"):
        check_target("trainer_strategy", NotAStrategy, "trainer_strategy 'x'")
    factory = lambda options: None  # noqa: E731 - a plain factory passes; its product is used
    assert check_target("trainer_strategy", factory) is factory


def test_every_installed_plugin_follows_its_protocol():
    manager = PluginManager(strict=True)
    assert manager.check_targets() == []
    assert len(manager.registry.entries()) >= 20


def test_the_check_runs_on_lazy_targets_too():
    reg = Registry()
    reg.add(PluginEntry("merge_method", "dumps", "json:dumps", "p", "d", "1"))
    with pytest.raises(PluginContractError, match="merge_method 'dumps'.*missing merge_tensor, name"):
        reg.load("merge_method", "dumps")


# --- misspelt hooks ---------------------------------------------------------------------------

TYPO_PLUGIN = """
    from paddlellm.api import hookimpl

    @hookimpl
    def register_model(register):  # typo: the hook is register_models
        register("typo-family", "json:dumps")
"""


def test_a_misspelt_hook_is_reported_with_the_hook_plugin_and_distribution(tmp_path, monkeypatch):
    site = make_fake_distribution(tmp_path / "site", "typo-dist", "0.2",
                                  {"typo_mod": TYPO_PLUGIN}, {"typo": "typo_mod"})
    monkeypatch.syspath_prepend(str(site))
    manager = PluginManager()
    failed = {f.plugin: f for f in manager.failed}
    assert failed["typo"].distribution == "typo-dist"
    assert "unknown hook 'register_model'" in failed["typo"].error
    assert "did you mean 'register_models'" in failed["typo"].error
    assert not manager.pm.has_plugin("typo")  # nothing of it stays registered
    assert "cpu" in manager.registry.names("backend")  # the others still load
    with pytest.raises(PluginLoadError, match="typo-dist.*unknown hook 'register_model'"):
        PluginManager(strict=True)


def test_llm_plugins_and_doctor_show_the_misspelt_hook(tmp_path):
    site = make_fake_distribution(tmp_path / "site", "typo-dist", "0.2",
                                  {"typo_mod": TYPO_PLUGIN}, {"typo": "typo_mod"})
    env = {"PYTHONPATH": f"{site}:{':'.join(sys.path)}", "PATH": "/usr/bin:/bin",
           "COLUMNS": "200"}
    code = "from paddlellm.cli import main; main()"
    listed = subprocess.run([sys.executable, "-c", code, "plugins", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0
    assert re.search(r"plugin 'typo' from typo-dist failed.*unknown hook 'register_model'",
                     listed.stderr), listed.stderr
    checked = subprocess.run([sys.executable, "-c", code, "plugins", "--check", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
    assert checked.returncode == 1 and "register_model" in checked.stderr
    doctor = subprocess.run([sys.executable, "-c", code, "doctor", "--json"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert "unknown hook 'register_model'" in doctor.stdout


def test_a_hook_with_an_argument_the_spec_lacks_is_a_contract_error():
    @hookimpl
    def register_models(register, extra):
        pass

    module = types.ModuleType("bad_args")
    module.register_models = register_models
    with pytest.raises(PluginContractError, match="plugin 'bad_args'.*extra"):
        PluginManager(entry_points=False).register(module, "bad_args", "bad-dist", "0.1")


# --- plugins import only the public API ---------------------------------------------------------

def _own_package(path: Path) -> str:
    return next(p for p in path.parts if p.startswith("paddlellm_"))


def plugin_import_problems(files) -> list[str]:
    """Imports of private core names, non-public core modules or other plugins' packages."""
    problems = []
    for path in files:
        own = _own_package(path.relative_to(ROOT))
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = [(a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported = [(node.module, a.name) for a in node.names]
            else:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            for module, name in imported:
                top = module.split(".")[0]
                if top == "paddlellm":
                    segments = module.split(".") + ([name] if name else [])
                    if any(s.startswith("_") for s in segments):
                        problems.append(f"{where}: private core name {'.'.join(segments)}")
                    elif module not in api.PUBLIC_MODULES:
                        problems.append(f"{where}: {module} is not public; import "
                                        f"{name or module} from paddlellm.api")
                elif top.startswith("paddlellm_") and top != own:
                    problems.append(f"{where}: imports another plugin's package {top}")
    return problems


def plugin_sources() -> list[Path]:
    files = {*ROOT.glob("plugins/*/paddlellm_*/**/*.py"),
             *ROOT.glob("plugins/*/*/paddlellm_*/**/*.py"),
             *ROOT.glob("examples/*/paddlellm_*/**/*.py")}
    return sorted(f for f in files if "tests" not in f.relative_to(ROOT).parts)


def test_plugins_import_only_the_public_api():
    files = plugin_sources()
    assert len(files) > 50
    problems = plugin_import_problems(files)
    assert not problems, "\n".join(problems)


def test_the_import_check_catches_private_names_and_other_plugins(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    pkg = tmp_path / "plugins" / "x" / "paddlellm_x"
    pkg.mkdir(parents=True)
    (pkg / "m.py").write_text(
        "from paddlellm.checkpoint._dtypes import widen\n"
        "from paddlellm.plugin.config import _validate\n"
        "from paddlellm.training.metrics import MetricsLogger\n"
        "import paddlellm_peft.common\n"
        "from paddlellm_x import own\n"
        "from paddlellm.api import hookimpl\n")
    problems = plugin_import_problems([pkg / "m.py"])
    assert len(problems) == 4, problems
    assert "private core name paddlellm.checkpoint._dtypes.widen" in problems[0]
    assert "private core name paddlellm.plugin.config._validate" in problems[1]
    assert "paddlellm.training.metrics is not public" in problems[2]
    assert "another plugin's package paddlellm_peft" in problems[3]


def test_the_public_api_resolves_and_imports_nothing_heavy():
    code = ("import sys, paddlellm.api as a; from paddlellm.api import hookimpl, AlignmentLoss; "
            "assert 'paddle' not in sys.modules, 'paddle imported'; print(len(a.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert all(not n.startswith("_") for n in api.__all__)
    with pytest.raises(AttributeError, match="no name '_validate'"):
        api._validate  # noqa: B018
    for module in api.PUBLIC_MODULES:
        assert module.split(".")[-1] in api.__doc__ or module == "paddlellm.api"
