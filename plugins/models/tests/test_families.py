"""Families, presets, the registry, errors, and the ``llm models`` / ``llm convert`` commands."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import paddle
import pytest
from typer.testing import CliRunner

from models_testutil import FIXTURES, NAMES, reference, rel_err
from paddlellm import AutoModelForCausalLM
from paddlellm.modeling.auto import family_by_name, family_for_model_type
from paddlellm.errors import UnknownPluginError
from paddlellm_models.registry_data import family_objects


def _hf(name):
    return json.loads((FIXTURES / name / "config.json").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_hf_config_round_trip(name):
    family = family_for_model_type(_hf(name)["model_type"])
    config = family.config_from_hf(_hf(name))
    assert family.config_from_hf(family.config_to_hf(config)) == config


def test_families_follow_the_core_protocol():
    from paddlellm.interfaces import ModelFamily

    assert len(family_objects()) >= 17 and {"yuan", "chatglm"} <= set(family_objects())
    assert all(isinstance(f, ModelFamily) for f in family_objects().values())


def test_forward_accepts_plain_ids(load):
    ref, model = reference("opt"), load("opt")
    out = model(ref["batch_ids"].tolist(), attention_mask=ref["batch_mask"])
    keep = ref["batch_mask"].astype(bool)
    assert rel_err(out.numpy()[keep], ref["batch_logits"][keep]) <= 1e-5


def test_every_preset_resolves_through_the_registry():
    for family in family_objects().values():
        for preset in family.presets:
            assert family_by_name(preset) is family
            config = family.config_for(preset)
            assert config.family == family.name and config.num_parameters() > 0
        if family.name not in family.presets:  # "gpt2" is both the family and a preset
            assert family.config_for(family.name) == family.config_for(family.default_preset)


@pytest.mark.parametrize("preset,params", [("qwen2.5-0.5b", 494.0e6), ("llama-3-8b", 8.03e9),
                                           ("mixtral-8x7b", 46.7e9), ("gpt2", 124.4e6),
                                           ("qwen3-8b", 8.19e9), ("gemma2-9b", 9.24e9),
                                           ("qwen3-30b-a3b", 30.5e9),
                                           ("phi-3-mini-4k", 3.82e9), ("chatglm2-6b", 6.24e9),
                                           ("baichuan2-7b", 7.51e9), ("baichuan2-13b", 13.9e9)])
def test_preset_sizes_match_the_published_models(preset, params):
    n = family_by_name(preset).config_for(preset).num_parameters()
    assert abs(n - params) / params < 0.01, n


def test_aliases_and_unknown_names():
    assert family_by_name("qwen").name == "qwen2"
    assert family_by_name("qwen2.5").name == "qwen2"
    with pytest.raises(UnknownPluginError, match="unknown model 'qwen9'.*valid:.*qwen2.5-0.5b"):
        family_by_name("qwen9")
    with pytest.raises(KeyError, match="unknown llama preset 'llama-9b'"):
        family_by_name("llama").config_for("llama-9b")
    with pytest.raises(UnknownPluginError, match="unknown model_type 'rwkv'"):
        family_for_model_type("rwkv")
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoModelForCausalLM()


@pytest.mark.parametrize("name", ["qwen-tiny", "gpt", "opt-tiny", "bloom-tiny", "qwen-moe-tiny",
                                  "gemma-tiny", "mixtral-tiny", "mistral-tiny", "llama",
                                  "qwen3-tiny", "gemma2-tiny", "qwen3-moe-tiny", "phi3-tiny",
                                  "chatglm", "chatglm2", "chatglm3", "baichuan", "baichuan2",
                                  "baichuan2-alibi-tiny", "yuan"])
def test_build_from_preset_trains(name):
    model = AutoModelForCausalLM.from_config(name, vocab_size=64)
    assert model.config.vocab_size == 64
    ids = paddle.to_tensor(np.random.default_rng(0).integers(0, 64, (2, 9)))
    logits = model(ids[:, :-1])
    assert logits.shape == [2, 8, 64]
    loss = paddle.nn.functional.cross_entropy(logits.reshape([-1, 64]), ids[:, 1:].reshape([-1]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if not p.stop_gradient]
    assert sum(g is not None and float(g.abs().sum()) > 0 for g in grads) > 0.9 * len(grads)


def test_qwen2_sliding_window_layers():
    config = family_by_name("qwen2").config_from_hf(_hf("qwen2"))
    assert config.sliding_window == 6 and config.full_attention_layers == [0]
    legacy = {k: v for k, v in _hf("qwen2").items() if k != "layer_types"}
    assert family_by_name("qwen2").config_from_hf(legacy) == config
    off = family_by_name("qwen2").config_from_hf({**legacy, "use_sliding_window": False})
    assert off.sliding_window is None and off.full_attention_layers == []


def test_checkpoint_errors_name_the_tensor(tmp_path):
    from paddlellm.checkpoint import CheckpointReader, save_state_dict

    src = FIXTURES / "llama"
    with CheckpointReader(src) as r:
        state = {k: np.array(r.get_numpy(k)) for k in r.keys()}
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "config.json").write_text((src / "config.json").read_text())
    save_state_dict({**state, "model.layers.0.mlp.extra.weight": np.zeros(3, np.float32)},
                    tmp_path / "extra")
    with pytest.raises(KeyError, match="unexpected tensor 'model.layers.0.mlp.extra.weight'"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "extra")
    (tmp_path / "missing").mkdir()
    (tmp_path / "missing" / "config.json").write_text((src / "config.json").read_text())
    save_state_dict({k: v for k, v in state.items() if k != "model.norm.weight"}, tmp_path / "missing")
    with pytest.raises(KeyError, match="lacks 1 tensors, e.g. model.norm.weight"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "missing")


def test_cli_does_not_import_paddle():
    code = ("import sys; from typer.testing import CliRunner; from paddlellm.cli import build_app; "
            "app = build_app(); r = CliRunner().invoke(app, ['--help']); assert 'convert' in r.output; "
            "r = CliRunner().invoke(app, ['models', '--json']); assert r.exit_code == 0, r.output; "
            "import json; rows = json.loads(r.output); assert any(x['name'] == 'qwen2.5-0.5b' for x in rows); "
            "assert 'paddle' not in sys.modules, 'paddle imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_llm_models_table():
    from paddlellm.cli import build_app

    result = CliRunner().invoke(build_app(), ["models", "--family", "mixtral"])
    assert result.exit_code == 0
    assert "mixtral-8x7b" in result.output and "qwen2.5-0.5b" not in result.output


def test_llm_convert_checks_parity(tmp_path):
    from paddlellm.cli import build_app

    app = build_app()
    ok = CliRunner().invoke(app, ["convert", str(FIXTURES / "gpt2"), str(tmp_path / "fp32")])
    assert ok.exit_code == 0, ok.output
    assert "top-1 agreement: 1.0000" in ok.output and "max |logit diff|: 0.000e+00" in ok.output
    ref = reference("gpt2")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "fp32")
    assert rel_err(model(paddle.to_tensor(ref["single_ids"])).numpy(), ref["single_logits"]) <= 1e-5

    bf16 = CliRunner().invoke(app, ["convert", str(FIXTURES / "qwen2"), str(tmp_path / "bf16"),
                                    "--dtype", "bfloat16", "--max_shard_size", "20KB"])
    assert bf16.exit_code == 0, bf16.output
    assert "float32 -> bfloat16" in bf16.output
    assert (tmp_path / "bf16" / "model.safetensors.index.json").is_file()
    strict = CliRunner().invoke(app, ["convert", str(FIXTURES / "qwen2"), str(tmp_path / "strict"),
                                      "--dtype", "bfloat16", "--threshold", "1e-6"])
    assert strict.exit_code == 1
    assert "parity check FAILED" in strict.output


def test_torch_bin_checkpoint_loads_and_converts(tmp_path):
    from paddlellm.cli import build_app

    ref = reference("gpt2")
    model = AutoModelForCausalLM.from_pretrained(FIXTURES / "gpt2_bin")
    assert rel_err(model(paddle.to_tensor(ref["single_ids"])).numpy(), ref["single_logits"]) <= 1e-5
    result = CliRunner().invoke(build_app(), ["convert", str(FIXTURES / "gpt2_bin"), str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "model.safetensors").is_file()
    assert not (tmp_path / "pytorch_model.bin").exists()


def test_rope_configs_of_every_transformers_version():
    from paddlellm_models.families.base import rope_from_hf

    v4 = {"rope_theta": 500000.0, "max_position_embeddings": 131072,
          "rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                           "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    v5 = {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 8192}}
    assert rope_from_hf(v4) == rope_from_hf(v5)
    assert rope_from_hf(v4)[0] == 500000.0 and rope_from_hf(v4)[1]["rope_type"] == "llama3"
    assert rope_from_hf({"rope_theta": 1e6, "rope_scaling": None}) == (1e6, None)
    theta, yarn = rope_from_hf({"max_position_embeddings": 4096,
                                "rope_scaling": {"rope_type": "yarn", "factor": 4.0}})
    assert theta == 10000.0 and yarn["original_max_position_embeddings"] == 4096
    with pytest.raises(ValueError, match="unsupported rope_type 'su'"):
        from paddlellm_models import rope

        rope.inv_freq(8, 1e4, {"rope_type": "su"}, 16)


def test_dtype_aliases_and_errors():
    model = AutoModelForCausalLM.from_config("qwen-tiny", dtype="bf16", vocab_size=64)
    assert model.dtype == "bfloat16"
    with pytest.raises(ValueError, match="not 'int8'"):
        AutoModelForCausalLM.from_config("qwen-tiny", dtype="int8", vocab_size=64)


def test_save_refuses_what_the_family_cannot_express(tmp_path):
    family = family_by_name("llama")
    model = family.build(family.config_for("llama", vocab_size=64).replace(sliding_window=8))
    with pytest.raises(ValueError, match="a llama config.json cannot express sliding_window=8"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name,overrides", [
    ("qwen-moe-tiny", {}), ("gpt-tiny", {}),
    ("gemma2-tiny", {"sliding_window": 4}),  # per-layer windows must survive recomputation
])
def test_recompute_gives_the_same_gradients(name, overrides):
    model = AutoModelForCausalLM.from_config(name, vocab_size=64, **overrides)
    ids = paddle.to_tensor(np.random.default_rng(0).integers(0, 64, (2, 9)))

    def grads(recompute):
        model.enable_recompute(recompute)
        model.clear_gradients()
        logits = model(ids[:, :-1])
        paddle.nn.functional.cross_entropy(logits.reshape([-1, 64]), ids[:, 1:].reshape([-1])).backward()
        return {n: p.grad.numpy().copy() for n, p in model.named_parameters() if p.grad is not None}

    plain, recomputed = grads(False), grads(True)
    assert plain.keys() == recomputed.keys() and len(plain) > 10
    for name_ in plain:
        np.testing.assert_allclose(recomputed[name_], plain[name_], rtol=1e-5, atol=1e-7)
