"""LoRA with default targets on families whose Hugging Face projections are fused (GPT-2
``c_attn``, Bloom, ChatGLM-6B and ChatGLM2 ``query_key_value``, Baichuan ``W_pack``, ChatGLM2
``dense_h_to_4h``, Phi-3 ``qkv_proj`` / ``gate_up_proj``): the adapters sit on the real fused modules, save in peft's format and
round-trip with ``peft`` both ways (``scripts/fixtures/make_family_fixtures.py
--lora-roundtrip``, skipped without ``$PADDLELLM_DEV_PYTHON``)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import apply_peft, save_adapter

ROOT = Path(__file__).resolve().parents[3]
MODELS = ROOT / "plugins" / "models" / "tests" / "fixtures"
SCRIPT = ROOT / "scripts" / "fixtures" / "make_family_fixtures.py"
DEV = os.environ.get("PADDLELLM_DEV_PYTHON")
BASES = {"gpt2": MODELS / "gpt2", "bloom": MODELS / "bloom", "phi3": MODELS / "phi3_longrope",
         "chatglm": MODELS / "published" / "chatglm",
         "chatglm2": MODELS / "published" / "chatglm2",
         "baichuan2": MODELS / "published" / "baichuan2_13b",
         "yuan": MODELS / "published" / "yuan"}
#: the HF modules the default targets adapt (peft's target_modules leaf names)
EXPECTED = {"gpt2": ["c_attn", "c_fc", "c_proj"],
            "bloom": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
            "phi3": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
            "chatglm": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
            "chatglm2": ["dense", "dense_4h_to_h", "dense_h_to_4h", "query_key_value"],
            "baichuan2": ["W_pack", "down_proj", "gate_proj", "o_proj", "up_proj"],
            # Yuan: no fused modules; its gate/up are named as published (activation on up_proj)
            "yuan": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]}


def adapted(name: str, seed: int):
    model = apply_peft(AutoModelForCausalLM.from_pretrained(BASES[name]), "lora",
                       {"lora_rank": 4, "lora_alpha": 8})
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        if not p.stop_gradient:  # B nonzero too, as after training
            p.set_value(paddle.to_tensor(p.numpy() + 0.3 * rng.standard_normal(p.shape).astype("float32")))
    return model.eval()


def logits(model, ids: np.ndarray) -> np.ndarray:
    with paddle.no_grad():
        return model(paddle.to_tensor(ids)).numpy()


def rel(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("name", list(BASES))
def test_default_targets_are_the_fused_modules_and_save(name, tmp_path):
    model = adapted(name, seed=1)
    ids = np.random.default_rng(0).integers(3, 64, (1, 12))
    want = logits(model, ids)
    save_adapter(model, tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["target_modules"] == EXPECTED[name]
    assert config["fan_in_fan_out"] is (name == "gpt2")  # GPT-2's Conv1D, as peft writes it
    again = AutoModelForCausalLM.from_pretrained(BASES[name], lora_path=tmp_path)
    np.testing.assert_allclose(logits(again, ids), want, rtol=0, atol=1e-6)
    assert rel(logits(AutoModelForCausalLM.from_pretrained(BASES[name]), ids), want) > 1e-2


@pytest.mark.skipif(not DEV, reason="PADDLELLM_DEV_PYTHON (torch + peft) not set")
def test_adapters_round_trip_with_peft(tmp_path):
    ours, args = {}, []
    for i, name in enumerate(BASES):
        model = adapted(name, seed=i)
        save_adapter(model, tmp_path / name / "ours")
        ours[name] = model
        args += [str(BASES[name]), str(tmp_path / name / "ours"), str(tmp_path / name)]
    proc = subprocess.run([DEV, str(SCRIPT), "--lora-roundtrip", *args], capture_output=True,
                          text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name, model in ours.items():
        theirs = dict(np.load(tmp_path / name / "peft.npz"))
        ids = theirs["ids"]
        back = dict(np.load(tmp_path / name / "ours.npz"))
        assert rel(back["logits"], logits(model, ids)) <= 1e-5, name  # ours, run by peft
        if "merged_logits" in back:  # peft's own merge into Conv1D / fused weights agrees
            assert rel(back["merged_logits"], logits(model, ids)) <= 1e-5, name
        loaded = AutoModelForCausalLM.from_pretrained(BASES[name], lora_path=tmp_path / name / "peft")
        assert rel(logits(loaded, ids), theirs["logits"]) <= 1e-5, name  # peft's, run by us
