"""LoKr: peft's factorisation, peft adapters (full and decomposed factors, rank/alpha
patterns) load with equal logits, merge == unmerged, adapter_enabled, training via llm run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import apply_peft, load_adapter, save_adapter
from paddlellm_peft.lokr.layer import LoKrLinear, factor_shapes, factorization
from peft_testutil import (FIX, REF, TOL, base, check_merge_roundtrip, check_peft_logits,
                           logits, randomize_trainable, sft_run)


def test_factorization_matches_peft_docstring_examples():
    assert factorization(256) == (16, 16)
    assert factorization(128) == (8, 16)
    assert factorization(127) == (1, 127)
    assert factorization(128, factor=4) == (4, 32)
    # (out 32, in 32) -> w1 (4, 4) and w2 (8, 8): r=2 decomposes w2 only, r=1 + both also w1
    assert factor_shapes(32, 32, 2, decompose_both=True) == {
        "lokr_w1": [4, 4], "lokr_w2_a": [8, 2], "lokr_w2_b": [2, 8]}
    assert factor_shapes(32, 32, 1, decompose_both=True) == {
        "lokr_w1_a": [4, 1], "lokr_w1_b": [1, 4], "lokr_w2_a": [8, 1], "lokr_w2_b": [1, 8]}


def test_peft_lokr_adapter_gives_peft_logits():
    model = AutoModelForCausalLM.from_pretrained(FIX / "base", lora_path=FIX / "lokr").eval()
    assert model.peft_method == "lokr"
    layers = {p: l for p, l in model.named_sublayers() if isinstance(l, LoKrLinear)}
    assert len(layers) == 6
    v = layers["model.layers.0.self_attn.v_proj"]
    down = layers["model.layers.1.mlp.down_proj"]
    assert (v.r, v.alpha, sorted(v.shapes)) == (8, 3.0, ["lokr_w1", "lokr_w2"])  # rank_pattern
    assert (down.r, down.alpha) == (1, 5.0) and "lokr_w1_a" in down.shapes  # alpha_pattern
    check_peft_logits(model, "lokr")


def test_merge_equals_unmerged_and_unmerge_restores_the_base():
    check_merge_roundtrip(load_adapter(base(), FIX / "lokr"), LoKrLinear)


def test_save_reload_keeps_logits_and_patterns(tmp_path):
    model = apply_peft(base(), "lokr", {"lokr_rank": 2, "lokr_alpha": 4,
                                        "target_modules": "q_proj,up_proj",
                                        "lokr_rank_pattern": {"up_proj": 8}})
    assert all(l.adapter_enabled for _, l in model.named_sublayers() if isinstance(l, LoKrLinear))
    assert np.abs(logits(model) - REF["base_logits"]).max() <= TOL  # w1 starts at zero
    randomize_trainable(model, np.random.default_rng(0))
    want = logits(model)
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["alpha"]) == ("LOKR", 2, 4.0)
    assert config["target_modules"] == ["q_proj", "up_proj"]
    assert set(config["rank_pattern"].values()) == {8}
    reloaded = load_adapter(base(), tmp_path / "a")
    assert np.abs(logits(reloaded) - want).max() <= TOL
    # a resumed run: the same options applied, then the checkpoint loaded into those layers
    resumed = apply_peft(base(), "lokr", {"lokr_rank": 2, "lokr_alpha": 4,
                                          "target_modules": "q_proj,up_proj",
                                          "lokr_rank_pattern": {"up_proj": 8}})
    assert np.abs(logits(load_adapter(resumed, tmp_path / "a")) - want).max() <= TOL


def test_mismatched_lokr_adapter_is_refused_by_message(tmp_path):
    config = json.loads((FIX / "lokr" / "adapter_config.json").read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(
        json.dumps({**config, "rank_pattern": {}}))  # every module r=2: other factor shapes
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(
        (FIX / "lokr" / "adapter_model.safetensors").read_bytes())
    expected = (r"module 'model.layers.0.mlp.down_proj' has \['lokr_w1_a', .*\], but r=2 "
                "with decompose_both=True gives")
    with pytest.raises(ValueError, match=expected):
        load_adapter(base(), tmp_path / "a")
    with pytest.raises(ValueError, match="matched no layer; layers that can be targeted"):
        apply_peft(base(), "lokr", {"target_modules": "nope_proj"})


def test_lokr_trains_through_llm_run(tmp_path):
    out, summary = sft_run(tmp_path, "--peft", "lokr", "--lokr_rank", "4", "--lokr_alpha", "8",
                           "--target_modules", "q_proj,v_proj", "--learning_rate", "1e-2")
    assert summary["peft"] == "lokr" and summary["trainable_percent"] < 5
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["alpha"]) == ("LOKR", 4, 8.0)


def test_options_are_flat_run_config_keys():
    from paddlellm.plugin.config import build_run_config
    from paddlellm.api import get_plugin_manager

    registry = get_plugin_manager().registry
    config = build_run_config(None, ["--peft", "lokr", "--lokr_rank", "4", "--lokr_alpha", "2",
                                     "--lokr_rank_pattern", '{"v_proj": 16}'], registry)
    options = config.plugin_options["peft_method"]
    assert (options.lokr_rank, options.lokr_alpha, options.lokr_rank_pattern) == (4, 2.0,
                                                                                  {"v_proj": 16})
    from paddlellm.modeling.peft import adapter_init_path

    for method in ("lokr", "vera"):
        config = build_run_config(None, ["--peft", method, f"--{method}_path", "some/dir"],
                                  registry)
        assert adapter_init_path(config.plugin_options["peft_method"]) == "some/dir"
    with pytest.raises(ValueError, match="expected a JSON object"):
        build_run_config(None, ["--peft", "lokr", "--lokr_rank_pattern", "v_proj=16"], registry)
    with pytest.raises(ValueError, match="unknown config key 'lokr_rank'.*closest valid keys: "
                                         "vera_rank"):
        build_run_config(None, ["--peft", "vera", "--lokr_rank", "4"], registry)
