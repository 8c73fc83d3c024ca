"""LoRA adapters: into the base (vs peft merge_and_unload), weighted merges (vs peft "cat")."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from merge_testutil import EXPECTED, assert_state_close, expected, fx, read_all
from paddlellm_merge import MergeError
from paddlellm_merge.adapters import merge_adapters
from paddlellm_merge.cli import run_merge_cli
from paddlellm_merge.engine import merge
from paddlellm_merge.sources import LoraAdapter
from paddlellm_merge.spec import MergeSpec, ModelInput


def cli(tmp_path, name, *args):
    out = str(tmp_path / name)
    run_merge_cli([*args, "--output_path", out, "--no-parity"], log=lambda s: None)
    return out


@pytest.mark.parametrize("adapter", ["lora_a1", "lora_a2"])  # a2: rsLoRA, other targets
def test_adapter_into_base_matches_peft(tmp_path, adapter):
    out = cli(tmp_path, "o", "--base_model_path", fx("base"), "--lora_model_path", fx(adapter))
    assert_state_close(read_all(out), expected(adapter + "_merged"), atol=1e-5)
    assert os.path.exists(os.path.join(out, "config.json"))


def test_scaling_rules():
    a1, a2 = LoraAdapter(fx("lora_a1")), LoraAdapter(fx("lora_a2"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert a1.scaling(key) == 8 / 4
    assert a2.scaling(key) == pytest.approx(4 / np.sqrt(2))  # use_rslora


def test_weighted_adapter_concat_is_exact_and_matches_peft_cat(tmp_path):
    out = str(tmp_path / "cat")
    merge_adapters([fx("lora_a1"), fx("lora_a2")], out, weights=[0.7, 0.3], log=lambda s: None)
    cfg = json.load(open(os.path.join(out, "adapter_config.json")))
    merged = LoraAdapter(out)
    q = "model.layers.1.self_attn.q_proj.weight"  # in both adapters: rank 4 + 2
    v = "model.layers.1.self_attn.v_proj.weight"  # only in a1: rank 4
    assert merged.rank(q) == 6 and merged.rank(v) == 4 and merged.scaling(q) == 1.0
    assert cfg["r"] in (4, 6) and not cfg["use_rslora"]
    assert set(cfg["target_modules"]) == {"q_proj", "k_proj", "v_proj", "down_proj"}
    a1, a2 = LoraAdapter(fx("lora_a1")), LoraAdapter(fx("lora_a2"))
    np.testing.assert_allclose(merged.delta(q), 0.7 * a1.delta(q) + 0.3 * a2.delta(q), atol=1e-6)
    # merged into the base it equals peft's add_weighted_adapter(..., combination_type="cat")
    full = cli(tmp_path, "full", "--base_model_path", fx("base"), "--lora_model_path", out)
    assert_state_close(read_all(full), expected("lora_cat_merged"), atol=1e-5)


def test_cli_adapters_without_base_write_an_adapter(tmp_path):
    out = cli(tmp_path, "cat", "--lora_model_path", fx("lora_a1"), fx("lora_a2"),
              "--weight_list", "1", "3")
    assert sorted(os.listdir(out)) == ["adapter_config.json", "adapter_model.safetensors"]
    q = "model.layers.0.self_attn.q_proj.weight"
    a1, a2 = LoraAdapter(fx("lora_a1")), LoraAdapter(fx("lora_a2"))
    np.testing.assert_allclose(LoraAdapter(out).delta(q), 0.25 * a1.delta(q) + 0.75 * a2.delta(q),
                               atol=1e-6)
    with pytest.raises(MergeError, match="'ties' needs --base_model_path"):
        cli(tmp_path, "x", "--lora_model_path", fx("lora_a1"), fx("lora_a2"),
            "--merge_method", "ties")


def _as_checkpoint(tmp_path, name):
    """peft's merged state (an expected fixture) as a checkpoint directory."""
    d = tmp_path / name
    d.mkdir()
    shutil.copy(os.path.join(EXPECTED, name + ".safetensors"), d / "model.safetensors")
    shutil.copy(fx("base", "config.json"), d / "config.json")
    return str(d)


def test_ties_over_adapters_equals_ties_over_merged_models(tmp_path):
    """mergekit's way: the adapters' full deltas B@A are merged with the base's method."""
    out = cli(tmp_path, "o", "--merge_method", "ties", "--base_model_path", fx("base"),
              "--lora_model_path", fx("lora_a1"), fx("lora_a2"), "--weight_list", "0.6", "0.4",
              "--reserve_p", "0.5")
    m1, m2 = _as_checkpoint(tmp_path, "lora_a1_merged"), _as_checkpoint(tmp_path, "lora_a2_merged")
    ref = str(tmp_path / "ref")
    merge(MergeSpec("ties", [ModelInput(m1, {"weight": 0.6, "density": 0.5}),
                             ModelInput(m2, {"weight": 0.4, "density": 0.5})], fx("base")),
          ref, log=lambda s: None)
    assert_state_close(read_all(out), read_all(ref), atol=2e-5)


def test_yaml_base_plus_adapter_syntax(tmp_path):
    from paddlellm_merge.spec import spec_from_dict

    spec = spec_from_dict({"merge_method": "linear", "models": [
        {"model": fx("base") + "+" + fx("lora_a1"), "parameters": {"weight": 1.0}}]})
    merge(spec, str(tmp_path / "o"), log=lambda s: None)
    assert_state_close(read_all(str(tmp_path / "o")), expected("lora_a1_merged"), atol=1e-5)


def test_adapter_errors(tmp_path):
    with pytest.raises(MergeError, match="no adapter_config.json"):
        LoraAdapter(fx("base"))
    d = tmp_path / "dora"
    shutil.copytree(fx("lora_a1"), d)
    cfg = json.load(open(d / "adapter_config.json"))
    (d / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    with pytest.raises(MergeError, match="uses DoRA"):
        LoraAdapter(str(d))
    small = tmp_path / "small"
    shutil.copytree(fx("base"), small)
    cfgm = json.load(open(small / "config.json"))
    from paddlellm.api import save_state_dict

    state = read_all(fx("base"))
    state["model.layers.0.self_attn.q_proj.weight"] = np.zeros((8, 16), np.float32)
    save_state_dict(state, small)
    with pytest.raises(MergeError, match="delta of model.layers.0.self_attn.q_proj.weight has "
                                         r"shape \(16, 16\) but the base tensor is \(8, 16\)"):
        cli(tmp_path, "o", "--base_model_path", str(small), "--lora_model_path", fx("lora_a1"))
    assert cfgm["model_type"] == "qwen2"
