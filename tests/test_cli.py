"""The ``llm`` command line: plugin listing, Paddle-free help, doctor, kernels check."""
from __future__ import annotations

import json
import subprocess
import sys

from helpers import run_cli

NO_PADDLE = ("import sys, runpy\n"
             "sys.argv = ['llm'] + sys.argv[1:]\n"
             "try:\n    runpy.run_module('paddlellm', run_name='__main__')\n"
             "except SystemExit as e:\n    code = e.code\n"
             "assert 'paddle' not in sys.modules, 'paddle was imported'\n"
             "print('PADDLE-FREE')\n")


def test_plugins_json_lists_backend_kernel_and_strategy():
    proc = run_cli("plugins", "--json", check=True)
    rows = json.loads(proc.stdout)
    keys = {(r["kind"], r["name"]) for r in rows}
    assert {("backend", "cpu"), ("attention_kernel", "reference"),
            ("trainer_strategy", "single")} <= keys
    for r in rows:
        assert {"kind", "name", "distribution", "version"} <= r.keys()
    cpu = next(r for r in rows if r["name"] == "cpu")
    assert cpu["distribution"] == "paddlellm-backend-cpu"


def test_plugins_table_and_kind_filter():
    out = run_cli("plugins", "--kind", "backend", check=True).stdout
    assert "cpu" in out and "gpu" in out and "reference" not in out


def test_help_and_plugins_do_not_import_paddle():
    for args in (["--help"], ["plugins"], ["plugins", "--json"]):
        proc = subprocess.run([sys.executable, "-c", NO_PADDLE, *args], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        assert "PADDLE-FREE" in proc.stdout


def test_both_console_scripts_exist():
    bindir = __import__("pathlib").Path(sys.executable).parent
    for name in ("llm", "paddlellm"):
        proc = subprocess.run([str(bindir / name), "--version"], capture_output=True, text=True)
        assert proc.returncode == 0 and "paddlellm 0.1.0" in proc.stdout


def test_doctor_reports_and_fails_when_a_run_cannot_work():
    proc = run_cli("doctor", "--json", env={"PADDLELLM_PLUGINS": "strategies"})
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert report["paddle"]["installed"] and report["selected_backend"] is None
    assert any("no hardware backend is available" in m for m in report["missing"])
    text = run_cli("doctor", env={"PADDLELLM_PLUGINS": "strategies"}).stdout
    assert "missing (a run cannot work" in text and "Paddle 3." in text


def test_doctor_shows_the_gpu_backend_unavailable_with_how_to_install():
    report = json.loads(run_cli("doctor", "--json").stdout)
    gpu = next(b for b in report["backends"] if b["name"] == "gpu")
    assert gpu["available"] is False and "paddlepaddle-gpu" in gpu["reason"]
    assert report["selected_backend"] == "cpu" and report["attention_kernel"] == "reference"


def test_kernels_check_passes_for_the_reference_kernel():
    proc = run_cli("kernels", "check", "reference", check=True)
    assert "19/19 supported cases pass" in proc.stdout  # 11 dense + 8 paged


def test_unknown_kernel_name_is_a_clear_error():
    proc = run_cli("kernels", "check", "refrence")
    assert proc.returncode == 2
    assert "unknown attention_kernel 'refrence'" in proc.stderr and "reference" in proc.stderr


def test_public_api_names_resolve_lazily():
    code = ("import sys, paddlellm\n"
            "assert 'paddle' not in sys.modules\n"
            "from paddlellm import AutoTokenizer, AutoModelForCausalLM\n"
            "assert AutoTokenizer.__name__ and AutoModelForCausalLM.__name__\n"
            "print('ok')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
