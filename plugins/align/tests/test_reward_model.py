"""The reward model: scoring rule, save/load in the sequence-classification layout (and
transformers loads it with equal scores), learning on the demo preference pairs."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.checkpoint import CheckpointFormatError
from paddlellm.modeling.prepare import BUNDLED_DEMO_MODELS, INSTRUCT_DEMO_MODEL
from paddlellm_align.data import parse_record
from paddlellm_align.demo import demo_preferences
from paddlellm_align.reward_model import (RewardModel, encode_preferences, pad_rows,
                                          pair_accuracy, pairwise_reward_loss, score_pairs,
                                          sequence_classification_architecture)

DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "")
TRANSFORMERS_SCORES = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification
path, ids = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
with torch.no_grad():
    out = model(torch.tensor(ids)).logits
print(json.dumps({"class": type(model).__name__, "shape": list(out.shape),
                  "scores": out[:, 0].tolist()}))
"""


def tiny(preset: str = "llama-tiny") -> RewardModel:
    paddle.seed(3)
    lm = AutoModelForCausalLM.from_config(preset, vocab_size=64, pad_token_id=0)
    return RewardModel.from_causal_lm(lm, seed=0)


def test_the_last_non_pad_token_is_scored_with_either_padding():
    model = tiny().eval()
    seqs = [[5, 9, 11, 3], [7, 2]]
    alone = [float(model(paddle.to_tensor([s]))[0]) for s in seqs]
    right = model(paddle.to_tensor([[5, 9, 11, 3], [7, 2, 0, 0]]),
                  paddle.to_tensor([[1, 1, 1, 1], [1, 1, 0, 0]])).numpy()
    left = model(paddle.to_tensor([[5, 9, 11, 3], [0, 0, 7, 2]]),
                 paddle.to_tensor([[1, 1, 1, 1], [0, 0, 1, 1]])).numpy()
    np.testing.assert_allclose(right, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(left, alone, rtol=1e-5, atol=1e-6)
    assert not hasattr(model.backbone, "lm_head")


@pytest.mark.parametrize("preset", ["llama-tiny", "qwen-tiny"])
def test_save_load_roundtrip_in_the_sequence_classification_layout(tmp_path, preset):
    model = tiny(preset).eval()
    ids = paddle.to_tensor([[4, 8, 15, 16, 23], [42, 8, 0, 0, 0]])
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")
    assert config["id2label"] == {"0": "LABEL_0"} and config["pad_token_id"] == 0
    from paddlellm.checkpoint import CheckpointReader

    with CheckpointReader(tmp_path) as reader:
        keys = set(reader.keys())
    assert "score.weight" in keys and "lm_head.weight" not in keys
    loaded = RewardModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


def test_loading_a_causal_lm_checkpoint_as_a_reward_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointFormatError, match="no \\*ForSequenceClassification model"):
        RewardModel.from_pretrained(BUNDLED_DEMO_MODELS["qwen2"])
    assert sequence_classification_architecture("GPT2LMHeadModel") == "GPT2ForSequenceClassification"


def test_transformers_loads_it_with_equal_scores(tmp_path):
    if not DEV_PYTHON or not Path(DEV_PYTHON).exists():
        pytest.skip("transformers check: set PADDLELLM_DEV_PYTHON (make test builds .venv-oracle)")
    ids = [[4, 8, 15, 16, 23, 7], [42, 8, 3, 0, 0, 0]]
    for preset in ("llama-tiny", "qwen-tiny"):
        model = tiny(preset).eval()
        model.save_pretrained(tmp_path / preset)
        ours = model(paddle.to_tensor(ids)).numpy()
        env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run([DEV_PYTHON, "-c", TRANSFORMERS_SCORES, str(tmp_path / preset),
                               json.dumps(ids)], capture_output=True, text=True, env=env,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        theirs = json.loads(proc.stdout.strip().splitlines()[-1])
        assert theirs["class"].endswith("ForSequenceClassification") and theirs["shape"] == [2, 1]
        np.testing.assert_allclose(theirs["scores"], ours, rtol=1e-4, atol=1e-5, err_msg=preset)


TASKS = ("count", "next", "fact")  # short answers a small model can judge


TRANSFORMERS_SAVES = r"""
import json, sys, torch
from transformers import LlamaConfig, LlamaForSequenceClassification
path, ids = sys.argv[1], json.loads(sys.argv[2])
torch.manual_seed(0)
config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=0)
model = LlamaForSequenceClassification(config).eval()
torch.nn.init.normal_(model.score.weight, std=0.5)
model.save_pretrained(path)
ids = torch.tensor(ids)
with torch.no_grad():
    print(json.dumps(model(ids, attention_mask=(ids != 0).long()).logits[:, 0].tolist()))
"""


def test_we_load_what_transformers_saves_with_equal_scores(tmp_path):
    if not DEV_PYTHON or not Path(DEV_PYTHON).exists():
        pytest.skip("transformers check: set PADDLELLM_DEV_PYTHON (make test builds .venv-oracle)")
    ids = [[4, 8, 15, 16, 23, 7], [0, 0, 42, 8, 3, 9]]  # left padding on the second row
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([DEV_PYTHON, "-c", TRANSFORMERS_SAVES, str(tmp_path), json.dumps(ids)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    theirs = json.loads(proc.stdout.strip().splitlines()[-1])
    model = RewardModel.from_pretrained(tmp_path)
    mask = (np.asarray(ids) != 0).astype("int64")
    ours = model(paddle.to_tensor(ids), paddle.to_tensor(mask)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def _pairs(tokenizer, split: str, n: int, seed: int):
    rows = [r for r in demo_preferences(n, split=split, seed=seed) if r["task"] in TASKS]
    records = [parse_record(r, f"demo:{i}", pointwise=False) for i, r in enumerate(rows)]
    return encode_preferences(tokenizer, records, max_length=96)


def test_reward_model_learns_the_demo_preferences():
    """A few Bradley–Terry steps on demo pairs raise held-out pair accuracy."""
    paddle.seed(0)
    tokenizer = AutoTokenizer.from_pretrained(INSTRUCT_DEMO_MODEL)
    model = RewardModel.from_causal_lm(AutoModelForCausalLM.from_pretrained(INSTRUCT_DEMO_MODEL),
                                       pad_token_id=tokenizer.pad_token_id, seed=0)
    train = _pairs(tokenizer, "train", 120, seed=1)  # 60 pairs
    held_out = _pairs(tokenizer, "eval", 100, seed=1)  # 49 pairs, never trained on
    before = pair_accuracy(model, held_out)
    model.train()
    opt = paddle.optimizer.AdamW(learning_rate=5e-4, parameters=model.parameters(),
                                 weight_decay=0.0)
    for step in range(24):
        batch = [train[(step * 8 + i) % len(train)] for i in range(8)]
        chosen, rejected = score_pairs(model, batch)
        loss, _ = pairwise_reward_loss(chosen, rejected)
        loss.backward()
        opt.step()
        opt.clear_grad()
    after = pair_accuracy(model, held_out)
    print(f"held-out pair accuracy {before['accuracy']:.3f} -> {after['accuracy']:.3f}, "
          f"loss {before['loss']:.3f} -> {after['loss']:.3f}")
    assert after["loss"] < before["loss"]
    assert after["accuracy"] >= before["accuracy"] + 0.15
    assert after["accuracy"] >= 0.6


def test_pad_rows_and_errors():
    ids, mask = pad_rows([[1, 2, 3], [4]], pad_id=9)
    np.testing.assert_array_equal(ids, [[1, 2, 3], [4, 9, 9]])
    np.testing.assert_array_equal(mask, [[1, 1, 1], [1, 0, 0]])
    model = tiny()
    model.pad_token_id = None
    with pytest.raises(ValueError, match="without pad_token_id scores one sequence at a time"):
        model(paddle.to_tensor([[1, 2], [3, 4]]))
