"""Prefix tuning: peft's adapters load with equal logits and generations, the decoder hook
follows peft's positions/mask semantics, save/resume, no merging, and training via llm run."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from paddlellm.api import AutoModelForCausalLM
from paddlellm.modeling.peft import (apply_peft, disable_adapters, load_adapter, merge_adapter,
                                     save_adapter)
from peft_testutil import FIX, REF, TOL, base, batch_logits, sft_run


def close(got: np.ndarray, want: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Max abs difference (over real tokens when ``mask`` is given)."""
    diff = np.abs(got - want)
    return float(diff[mask.astype(bool)].max() if mask is not None else diff.max())


def test_peft_prefix_adapter_gives_peft_logits_and_generation():
    model = AutoModelForCausalLM.from_pretrained(FIX / "base", prefix_path=FIX / "prefix").eval()
    assert model.peft_method == "prefix"
    assert close(model(REF["ids"]).numpy(), REF["prefix_logits"]) <= TOL
    # left padding + explicit position ids: peft shifts them by num_virtual_tokens
    assert close(batch_logits(model), REF["prefix_batch_logits"], REF["batch_mask"]) <= TOL
    assert close(REF["prefix_logits"], REF["base_logits"]) > 1e-2  # the prefix matters
    # generation with a KV cache that starts with the prefix equals peft's generate
    out = model.generate(REF["ids"], max_new_tokens=REF["prefix_greedy"].shape[1], do_sample=False)
    np.testing.assert_array_equal(out.numpy()[:, REF["ids"].shape[1]:], REF["prefix_greedy"])
    padded = model.generate(REF["batch_ids"], attention_mask=REF["batch_mask"],
                            max_new_tokens=REF["prefix_greedy_batch"].shape[1], do_sample=False)
    np.testing.assert_array_equal(padded.numpy()[:, REF["ids"].shape[1]:],
                                  REF["prefix_greedy_batch"])
    uncached = model.generate(REF["ids"], max_new_tokens=3, do_sample=False, use_cache=False)
    np.testing.assert_array_equal(uncached.numpy()[:, REF["ids"].shape[1]:],
                                  REF["prefix_greedy"][:, :3])


def test_disabled_prefix_gives_base_logits_and_cannot_merge():
    model = load_adapter(base(), FIX / "prefix")
    with disable_adapters(model):
        assert close(model(REF["ids"]).numpy(), REF["base_logits"]) <= TOL
    assert close(model(REF["ids"]).numpy(), REF["prefix_logits"]) <= TOL
    with pytest.raises(ValueError, match="prefix tuning cannot be merged"):
        merge_adapter(model)
    with pytest.raises(ValueError, match="segment_ids"):
        model(REF["ids"], segment_ids=paddle.zeros([2, REF["ids"].shape[1]], dtype="int64"))


def test_projection_trains_saves_flat_prefix_and_resumes(tmp_path):
    model = apply_peft(base(), "prefix", {"num_prefix_tokens": 4, "prefix_projection": True,
                                          "prefix_projection_hidden_size": 8})
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    assert trainable and all(n.startswith("prefix_kv.") for n in trainable)
    assert any("transform" in n for n in trainable)  # the reparameterisation MLP
    model.train()
    loss = model(REF["ids"]).mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if not p.stop_gradient)
    model.eval()
    want = model(REF["ids"]).numpy()
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert config["peft_type"] == "PREFIX_TUNING" and config["num_virtual_tokens"] == 4
    assert (config["token_dim"], config["num_attention_heads"], config["num_layers"]) == (16, 2, 2)
    # a plain model gets the flat (projected) prefix, as peft loads it
    plain = load_adapter(base(), tmp_path / "a")
    assert plain.prefix_kv.projection is False
    assert close(plain(REF["ids"]).numpy(), want) <= TOL
    # a resumed run (same options) gets the MLP back from prefix_encoder.safetensors
    resumed = apply_peft(base(), "prefix", {"num_prefix_tokens": 4, "prefix_projection": True,
                                            "prefix_projection_hidden_size": 8})
    resumed = load_adapter(resumed, tmp_path / "a")
    assert resumed.prefix_kv.projection is True
    assert close(resumed(REF["ids"]).numpy(), want) <= TOL


def test_bad_prefix_adapter_is_refused_by_message(tmp_path):
    config = json.loads((FIX / "prefix" / "adapter_config.json").read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps({**config, "num_layers": 5}))
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(
        (FIX / "prefix" / "adapter_model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="num_layers = 5 does not fit this model"):
        load_adapter(base(), tmp_path / "a")


def test_prefix_tuning_trains_through_llm_run(tmp_path):
    from paddlellm.modeling.prepare import demo_model_dir

    out, summary = sft_run(tmp_path, "--peft", "prefix", "--num_prefix_tokens", "8",
                           "--prefix_projection", "--learning_rate", "1e-2")
    assert summary["peft"] == "prefix" and summary["trainable_percent"] < 10
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    model = AutoModelForCausalLM.from_pretrained(demo_model_dir(), prefix_path=out)
    assert model.prefix_kv.num_tokens == 8
