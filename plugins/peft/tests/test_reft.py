"""ReFT (LoReFT): R has orthonormal rows, the edit replaces h's component in R's row space by
W h + b at exactly the chosen prompt positions, training sees the same positions as
generation, save / load, no merge (llm export says why), training via llm run."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from helpers import run_cli
from paddlellm.api import DEMO_MODEL_DIR
from paddlellm.modeling.peft import (apply_peft, batch_context, disable_adapters, load_adapter,
                                     merge_adapter, save_adapter)
from paddlellm_peft.reft.layer import ReftLayer, parse_layers, parse_positions, position_mask
from paddlellm_peft.reft.method import prompt_lengths
from peft_testutil import REF, TOL, base, logits, randomize_trainable, sft_run


def reft_layers(model) -> dict[int, ReftLayer]:
    return {i: l for i, l in enumerate(model.model.layers) if isinstance(l, ReftLayer)}


def test_option_parsing():
    assert parse_positions("f7+l7") == (7, 7) and parse_positions("l1") == (0, 1)
    assert parse_positions("f3") == (3, 0)
    for bad in ("f7l7", "x3", "", "f0+l0"):
        with pytest.raises(ValueError, match="reft_positions"):
            parse_positions(bad)
    assert parse_layers("all", 4) == [0, 1, 2, 3] and parse_layers("every_other", 5) == [0, 2, 4]
    assert parse_layers("3;1", 4) == [1, 3] and parse_layers("0,2", 4) == [0, 2]
    with pytest.raises(ValueError, match="layers 0..3"):
        parse_layers("4", 4)


def test_position_mask_counts_real_tokens_and_the_training_prompt():
    mask = paddle.to_tensor([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])  # left padding
    got = position_mask(mask, 2, 7, 1, 2, None).numpy()[..., 0]
    np.testing.assert_array_equal(got, [[0, 0, 1, 0, 0, 1, 1], [1, 0, 0, 0, 0, 1, 1]])
    # training: prompts of 3 and 4 real tokens (the rest is the answer)
    got = position_mask(mask, 2, 7, 1, 2, paddle.to_tensor([3, 4])).numpy()[..., 0]
    np.testing.assert_array_equal(got, [[0, 0, 1, 1, 1, 0, 0], [1, 0, 1, 1, 0, 0, 0]])
    labels = np.array([[-100, -100, -100, -100, -100, 5, 6], [-100] * 4 + [1, 2, 3]])
    assert prompt_lengths({"labels": labels, "attention_mask": mask.numpy()}).tolist() == [3, 4]
    assert prompt_lengths({"labels": np.ones((1, 5), int)}).tolist() == [0]  # all target


def test_init_edits_only_the_chosen_positions_as_loreft_defines():
    model = apply_peft(base(), "reft", {"reft_rank": 3, "reft_layers": "1",
                                        "reft_positions": "l1"})
    model.eval()
    layers = reft_layers(model)
    assert sorted(layers) == [1]
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    assert len(trainable) == 3  # R, W, b per intervened layer
    seen = {}
    layer = layers[1]
    h_base = layer.base_layer.register_forward_post_hook(
        lambda m, i, o: seen.__setitem__("h", o.numpy()))
    h_new = layer.register_forward_post_hook(lambda m, i, o: seen.__setitem__("new", o.numpy()))
    out = logits(model)
    h_base.remove(), h_new.remove()
    iv = layer.intervention
    R = iv.rotation().numpy()
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)  # orthonormal rows
    h, new = seen["h"][0], seen["new"][0]  # (T, H)
    np.testing.assert_array_equal(new[:-1], h[:-1])  # l1: only the last prompt token
    W, b = iv.learned_source_weight.numpy(), iv.learned_source_bias.numpy()
    np.testing.assert_allclose(R @ new[-1], W @ h[-1] + b, atol=1e-4)  # R h' = W h + b
    P = np.eye(h.shape[1]) - R.T @ R  # the rest of h is untouched
    np.testing.assert_allclose(P @ new[-1], P @ h[-1], atol=1e-4)
    # causal: logits before the last position are the base model's; the last one changed
    assert np.abs(out[:, :-1] - REF["base_logits"][:, :-1]).max() <= TOL
    assert np.abs(out[:, -1] - REF["base_logits"][:, -1]).max() > 1e-4
    with disable_adapters(model):
        assert np.abs(logits(model) - REF["base_logits"]).max() <= TOL


def test_training_batch_edits_the_positions_generation_edits():
    """Logits of prompt + answer in a labelled batch, at the prompt's positions, equal the
    logits of the prompt alone (what generation's prefill sees)."""
    model = apply_peft(base(), "reft", {"reft_rank": 2, "reft_positions": "f2+l2"})
    model.eval()
    randomize_trainable(model, np.random.default_rng(0))
    ids = np.asarray(REF["ids"])[:1]  # (1, T)
    t = ids.shape[1]
    prompt = t - 4
    labels = np.where(np.arange(t) < prompt, -100, ids)
    with paddle.no_grad():
        alone = model(paddle.to_tensor(ids[:, :prompt])).numpy()
        with batch_context(model, {"input_ids": ids, "labels": labels}):
            full = model(paddle.to_tensor(ids)).numpy()
        plain = model(paddle.to_tensor(ids)).numpy()  # no context: the whole input is the prompt
    assert np.abs(full[:, :prompt] - alone).max() <= TOL
    assert np.abs(plain[:, :prompt] - alone).max() > 1e-4


def test_save_load_keep_the_logits_and_merge_is_refused(tmp_path):
    model = apply_peft(base(), "reft", {"reft_rank": 4, "reft_layers": "every_other"})
    model.eval()
    randomize_trainable(model, np.random.default_rng(2))  # a non-orthonormal free matrix
    want = logits(model)
    save_adapter(model, tmp_path / "a")
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (config["peft_type"], config["reft_rank"], config["reft_layers"],
            config["reft_positions"]) == ("REFT", 4, [0], "f7+l7")
    loaded = load_adapter(base(), tmp_path / "a")
    assert np.abs(logits(loaded) - want).max() <= TOL
    resumed = load_adapter(apply_peft(base(), "reft", {"reft_rank": 4,
                                                       "reft_layers": "every_other"}),
                           tmp_path / "a")
    assert np.abs(logits(resumed) - want).max() <= TOL
    with pytest.raises(ValueError, match="ReFT cannot be merged"):
        merge_adapter(loaded)
    config["hidden_size"] = 7
    (tmp_path / "a" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="hidden_size = 7 does not fit"):
        load_adapter(base(), tmp_path / "a")


def test_reft_trains_through_llm_run_and_export_refuses_to_merge(tmp_path):
    out, summary = sft_run(tmp_path, "--peft", "reft", "--reft_rank", "4",
                           "--learning_rate", "2e-2")
    assert summary["peft"] == "reft"
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert json.loads((out / "adapter_config.json").read_text())["peft_type"] == "REFT"
    proc = run_cli("export", "--model_name_or_path", str(DEMO_MODEL_DIR), "--lora_path", str(out),
                   "--merge-adapter", "--output_dir", str(tmp_path / "merged"))
    assert proc.returncode != 0 and "ReFT cannot be merged" in proc.stderr
    assert "Traceback" not in proc.stderr
    # llm predict: --lora_path merges (refused by message); --prefix_path generates unmerged
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"src": "Count: a b c"}\n{"src": "Count: f h j t a b"}\n')
    proc = run_cli("predict", "--model_name_or_path", str(DEMO_MODEL_DIR), "--lora_path",
                   str(out), "--input_file", str(prompts), "--output_file", str(tmp_path / "p"))
    assert proc.returncode != 0 and "llm predict --prefix_path" in proc.stderr
    run_cli("predict", "--model_name_or_path", str(DEMO_MODEL_DIR), "--prefix_path", str(out),
            "--input_file", str(prompts), "--output_file", str(tmp_path / "p.jsonl"),
            "--max_length", "48", check=True)
    rows = [json.loads(l) for l in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all("output" in r for r in rows)


def test_packed_sequences_are_refused_by_message():
    model = apply_peft(base(), "reft", {"reft_rank": 2})
    ids = paddle.to_tensor(np.asarray(REF["ids"])[:1])
    segments = paddle.ones_like(ids)
    positions = paddle.arange(ids.shape[1]).unsqueeze(0)
    with pytest.raises(ValueError, match="ReFT cannot be combined with packed sequences"):
        model(ids, segment_ids=segments, position_ids=positions)


def test_cached_decoding_matches_the_training_view():
    """Prefill edits the prompt, decoded tokens are not edited: the cached decode step's
    logits equal a full forward whose labels mark the decoded token as the answer."""
    model = apply_peft(base(), "reft", {"reft_rank": 2, "reft_positions": "f1+l2"})
    model.eval()
    randomize_trainable(model, np.random.default_rng(3))
    ids = np.asarray(REF["ids"])[:1]  # (1, T)
    prompt, t = ids[:, :-1], ids.shape[1]
    with paddle.no_grad():
        cache = model.new_cache(1, t)
        first = model(paddle.to_tensor(prompt), cache=cache).numpy()
        step = model(paddle.to_tensor(ids[:, -1:]), cache=cache).numpy()
        labels = np.where(np.arange(t) < t - 1, -100, ids)
        with batch_context(model, {"input_ids": ids, "labels": labels}):
            full = model(paddle.to_tensor(ids)).numpy()
    assert np.abs(full[:, :-1] - first).max() <= TOL
    assert np.abs(full[:, -1] - step[:, 0]).max() <= TOL


def test_llm_plugins_lists_mora_and_reft():
    proc = run_cli("plugins", "--kind", "peft_method", check=True)
    assert "mora" in proc.stdout and "reft" in proc.stdout and "loreft" in proc.stdout
