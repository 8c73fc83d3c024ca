"""Adapters name their base: every adapter we write records ``base_model_name_or_path`` (the
folder the base was loaded from), so our ``from_pretrained(adapter_dir)`` and, in the dev
environment, ``peft.AutoPeftModelForCausalLM.from_pretrained(adapter_dir)`` load base and
adapter from the adapter folder alone and give the adapted model's logits."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import apply_peft, save_adapter
from peft_testutil import FIX, REF, base, logits, randomize_trainable

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fixtures" / "check_auto_peft.py"
DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "/work/devenv/bin/python")
METHODS = {
    "lora": {"lora_rank": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]},
    "vera": {"vera_rank": 4, "target_modules": "q_proj,v_proj"},
    "prefix": {"num_prefix_tokens": 3},
    "lokr": {"lokr_rank": 2, "target_modules": ["q_proj", "up_proj"]},
}


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Every method's adapter on the fixture base, random and nonzero, saved; with the
    adapted model's logits."""
    out = tmp_path_factory.mktemp("adapters")
    rng = np.random.default_rng(1)
    made = {}
    for name, options in METHODS.items():
        model = apply_peft(base(), name, options)
        randomize_trainable(model, rng)
        save_adapter(model, out / name)
        made[name] = (out / name, logits(model))
    return made


@pytest.mark.parametrize("method", list(METHODS))
def test_adapter_config_names_the_base_and_loads_from_the_folder_alone(adapters, method):
    directory, want = adapters[method]
    config = json.loads((directory / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((FIX / "base").resolve())
    assert np.abs(want - REF["base_logits"]).max() > 1e-2  # the adapter changes the output
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert np.abs(logits(model) - want).max() <= 1e-5


def test_adapter_without_a_base_says_how_to_load_it(adapters, tmp_path):
    directory, _ = adapters["lora"]
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in directory.iterdir():
        (bare / f.name).write_bytes(f.read_bytes())
    config = json.loads((bare / "adapter_config.json").read_text())
    (bare / "adapter_config.json").write_text(json.dumps({**config,
                                                          "base_model_name_or_path": None}))
    with pytest.raises(ValueError, match="does not name its base model"):
        AutoModelForCausalLM.from_pretrained(bare)


def test_peft_auto_model_loads_our_adapters_alone(adapters, tmp_path):
    if not Path(DEV_PYTHON).exists():
        pytest.skip(f"no dev python at {DEV_PYTHON} (set PADDLELLM_DEV_PYTHON)")
    np.save(tmp_path / "ids.npy", np.asarray(REF["ids"], dtype=np.int64))
    args = []
    for name, (directory, _) in adapters.items():
        args += [str(directory), str(tmp_path / f"{name}.npy")]
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([DEV_PYTHON, str(SCRIPT), str(tmp_path / "ids.npy"), *args],
                          capture_output=True, text=True, env=env, timeout=300)
    if proc.returncode != 0 and "ModuleNotFoundError" in proc.stderr:
        pytest.skip(f"peft/torch/transformers missing at {DEV_PYTHON}: {proc.stderr[-200:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, (_, want) in adapters.items():
        theirs = np.load(tmp_path / f"{name}.npy")
        assert np.abs(theirs - want).max() <= 1e-5, name
