"""What we save, transformers loads: every fixture is saved by paddlellm, loaded by
transformers in the dev environment (a subprocess; this test never imports torch) and its
logits compared with the stored references. Skipped only where torch/transformers are absent."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models_testutil import NAMES

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fixtures" / "make_model_fixtures.py"
DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "/work/devenv/bin/python")


def _dev_python() -> str | None:
    if not Path(DEV_PYTHON).exists():
        return None
    probe = subprocess.run([DEV_PYTHON, "-c", "import torch, transformers"], capture_output=True)
    return DEV_PYTHON if probe.returncode == 0 else None


def test_transformers_loads_what_we_save(load, tmp_path):
    python = _dev_python()
    if python is None:
        pytest.skip(f"torch + transformers not available at {DEV_PYTHON} (set PADDLELLM_DEV_PYTHON)")
    args = []
    for name in NAMES:
        load(name).save_pretrained(tmp_path / name)
        args += [str(tmp_path / name), name]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([python, str(SCRIPT), "--check-roundtrip", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(errors) == NAMES
    bad = {k: v for k, v in errors.items() if not v <= 1e-5}
    assert not bad, f"transformers logits differ after our save: {bad}"
