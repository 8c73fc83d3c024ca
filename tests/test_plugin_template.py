"""The example plugin distribution installs into a separate environment and is used."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from helpers import ROOT, run_cli


def test_template_plugin_is_listed_and_used(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target),
                    str(ROOT / "examples" / "plugin-template")], check=True,
                   capture_output=True)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(target),
                                                       os.environ.get("PYTHONPATH")]))}
    rows = json.loads(run_cli("plugins", "--json", env=env, check=True).stdout)
    entry = next(r for r in rows if r["name"] == "sdpa-example")
    assert entry["kind"] == "attention_kernel"
    assert entry["distribution"] == "paddlellm-example-kernel" and entry["version"] == "0.1.0"

    check = run_cli("kernels", "check", "sdpa-example", env=env, check=True).stdout
    assert "sdpa-example (paddlellm-example-kernel): 4/4 supported cases pass" in check
    assert re.search(r"^ *padding +unsupported$", check, re.M), check

    # low priority: the reference kernel still serves auto-selected calls
    doctor = json.loads(run_cli("doctor", "--json", env=env).stdout)
    assert doctor["attention_kernel"] == "reference"
    assert "sdpa-example" in doctor["plugins"]["attention_kernel"]

    # without the environment the plugin is gone
    rows = json.loads(run_cli("plugins", "--json", check=True).stdout)
    assert all(r["name"] != "sdpa-example" for r in rows)
