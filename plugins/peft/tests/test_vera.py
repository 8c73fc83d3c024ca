"""VeRA: peft adapters (saved projections) load with equal logits, shared frozen A/B,
merge == unmerged, adapter_enabled, save/reload, errors, training via llm run."""
from __future__ import annotations

import json

import numpy as np
import pytest

from paddlellm.modeling.peft import apply_peft, load_adapter, save_adapter
from paddlellm_peft.vera.layer import VeraLinear
from peft_testutil import (FIX, REF, TOL, base, check_merge_roundtrip, check_peft_logits,
                           logits, randomize_trainable, sft_run)


def vera_layers(model) -> dict[str, VeraLinear]:
    return {p: l for p, l in model.named_sublayers() if isinstance(l, VeraLinear)}


def test_peft_vera_adapter_gives_peft_logits():
    model = load_adapter(base(), FIX / "vera")
    layers = vera_layers(model)
    assert len(layers) == 6
    shared = {id(l.projections) for l in layers.values()}
    assert len(shared) == 1  # one A/B pair for all layers
    A = next(iter(layers.values())).projections.A
    assert list(A.shape) == [4, 32] and A.stop_gradient
    check_peft_logits(model, "vera")


def test_merge_equals_unmerged_and_unmerge_restores_the_base():
    check_merge_roundtrip(load_adapter(base(), FIX / "vera"), VeraLinear)


def test_apply_trains_only_the_vectors_and_reloads(tmp_path):
    model = apply_peft(base(), "vera", {"vera_rank": 8, "target_modules": ["k_proj", "down_proj"],
                                        "vera_projection_prng_key": 3})
    trainable = sorted(n.rsplit(".", 1)[-1] for n, p in model.named_parameters()
                       if not p.stop_gradient)
    assert set(trainable) == {"vera_lambda_b", "vera_lambda_d"} and len(trainable) == 8
    assert np.abs(logits(model) - REF["base_logits"]).max() <= TOL  # lambda_b starts at zero
    proj = next(iter(vera_layers(model).values())).projections
    assert list(proj.A.shape) == [8, 32] and list(proj.B.shape) == [32, 8]  # largest in / out
    model.train()
    logits_t = model(REF["ids"])
    logits_t.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if not p.stop_gradient)
    model.eval()
    randomize_trainable(model, np.random.default_rng(0))
    want = logits(model)
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["save_projection"],
            config["projection_prng_key"]) == ("VERA", 8, True, 3)
    assert np.abs(logits(load_adapter(base(), tmp_path / "a")) - want).max() <= TOL
    # a resumed run (other projection seed): the checkpoint's projections and vectors win
    resumed = apply_peft(base(), "vera", {"vera_rank": 8, "target_modules": ["k_proj", "down_proj"],
                                          "vera_projection_prng_key": 4})
    assert np.abs(logits(load_adapter(resumed, tmp_path / "a")) - want).max() <= TOL
    # the same key draws the same projections
    again = apply_peft(base(), "vera", {"vera_rank": 8, "target_modules": ["k_proj", "down_proj"],
                                        "vera_projection_prng_key": 3})
    np.testing.assert_array_equal(next(iter(vera_layers(again).values())).projections.A.numpy(),
                                  proj.A.numpy())


def test_adapter_without_projections_is_refused_by_message(tmp_path):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(FIX / "vera" / "adapter_model.safetensors"))
    (tmp_path / "a").mkdir()
    save_file({k: v for k, v in tensors.items() if "vera_A" not in k and "vera_B" not in k},
              str(tmp_path / "a" / "adapter_model.safetensors"))
    (tmp_path / "a" / "adapter_config.json").write_text(
        (FIX / "vera" / "adapter_config.json").read_text())
    with pytest.raises(ValueError, match="saved with save_projection=False"):
        load_adapter(base(), tmp_path / "a")


def test_vera_trains_through_llm_run(tmp_path):
    out, summary = sft_run(tmp_path, "--peft", "vera", "--vera_rank", "32",
                           "--learning_rate", "5e-2")
    assert summary["peft"] == "vera" and summary["trainable_percent"] < 2
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"]) == ("VERA", 32)
