"""What we save, peft loads: prefix-tuning, LoKr and VeRA adapters trained here (random
nonzero values) are loaded by peft 0.21.2 on the same base in the dev environment (one
subprocess; this test never imports torch) and give our logits."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from paddlellm.modeling.peft import apply_peft, save_adapter
from peft_testutil import REF, base, batch_logits, logits, randomize_trainable

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fixtures" / "make_peft_fixtures_others.py"
DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "/work/devenv/bin/python")
METHODS = {
    "prefix": {"num_prefix_tokens": 3, "prefix_projection": True,
               "prefix_projection_hidden_size": 8},
    "lokr": {"lokr_rank": 2, "lokr_alpha": 3, "lokr_decompose_both": True,
             "target_modules": ["q_proj", "v_proj", "down_proj"],
             "lokr_rank_pattern": {"v_proj": 8, "down_proj": 1},
             "lokr_alpha_pattern": {"down_proj": 5}},
    "vera": {"vera_rank": 4, "target_modules": "q_proj,v_proj,up_proj",
             "vera_projection_prng_key": 5},
}


def test_peft_loads_what_we_save(tmp_path):
    if not Path(DEV_PYTHON).exists():
        pytest.skip(f"no dev python at {DEV_PYTHON} (set PADDLELLM_DEV_PYTHON)")
    rng = np.random.default_rng(0)
    ours, args = {}, []
    for name, options in METHODS.items():
        model = apply_peft(base(), name, options)
        randomize_trainable(model, rng)
        ours[name] = {"logits": logits(model), "batch_logits": batch_logits(model)}
        assert np.abs(ours[name]["logits"] - REF["base_logits"]).max() > 1e-2, name
        save_adapter(model, tmp_path / name)
        args += [str(tmp_path / name), str(tmp_path / f"{name}.npz")]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([DEV_PYTHON, str(SCRIPT), "--check", *args], capture_output=True,
                          text=True, env=env, timeout=300)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"peft/torch/transformers missing at {DEV_PYTHON}: {proc.stderr[-200:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    real = REF["batch_mask"].astype(bool)
    for name in METHODS:
        theirs = np.load(tmp_path / f"{name}.npz")
        assert np.abs(theirs["logits"] - ours[name]["logits"]).max() <= 1e-5, name
        diff = np.abs(theirs["batch_logits"] - ours[name]["batch_logits"])[real]
        assert diff.max() <= 1e-5, name
