"""The core's packages named for their jobs (``docs/architecture.md``, "The core's layers").

Importing a layer's package imports none of its heavy modules, so a light module inside it
(``paddlellm.plugin.device``, ``paddlellm.training.metrics``) stays light; the modules that
moved into the packages are gone from the top level.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "core" / "paddlellm"


@pytest.mark.parametrize("package", ["paddlellm.plugin", "paddlellm.modeling", "paddlellm.training",
                                     "paddlellm.plugin.config", "paddlellm.training.metrics"])
def test_a_package_imports_no_paddle_and_no_numpy(package):
    code = (f"import json, sys, {package}\n"
            "print(json.dumps([m for m in ('paddle', 'numpy') if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [], f"importing {package} imports {out.stdout.strip()}"


def test_the_old_flat_modules_are_gone():
    flat = sorted(p.stem for p in CORE.glob("*.py"))
    assert flat == ["__init__", "__main__", "api", "errors", "hookspecs", "hub", "interfaces",
                    "kinds", "version"], (
        "a new top-level module of core/paddlellm: put it in the package of its layer "
        "(docs/architecture.md), or add it to the foundation there and here")
    for old in ("train", "builtin", "run", "models", "plugins", "config"):
        with pytest.raises(ModuleNotFoundError):
            __import__(f"paddlellm.{old}")
