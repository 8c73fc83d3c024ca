"""``llm run --stage rm``: a reward model learns preference pairs (held-out pair accuracy
rises), is saved in the sequence-classification layout and loads back with equal scores, and
an interrupted run resumes to the same losses."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlellm import AutoTokenizer
from paddlellm.plugin.config import build_run_config
from paddlellm.errors import ConfigError
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm_align.demo import demo_preferences
from paddlellm_align.reward_model import RewardModel, pad_rows
from align_testutil import llm_run

TASKS = ("count", "next", "fact")  # short answers the 0.8M-parameter demo model can judge
COMMON = ("--stage", "rm", "--learning_rate", "1e-3", "--lr_scheduler_type", "constant",
          "--warmup_steps", "0", "--per_device_train_batch_size", "8", "--max_length", "64",
          "--logging_steps", "1", "--per_device_eval_batch_size", "32")


def write_pairs(path, n: int, split: str) -> str:
    rows = [r for r in demo_preferences(n, split=split, seed=1) if r["task"] in TASKS]
    path.write_text("".join(json.dumps({k: r[k] for k in ("src", "tgt", "response", "sort")})
                            + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rm")
    return write_pairs(folder / "train.jsonl", 400, "train"), \
        write_pairs(folder / "dev.jsonl", 200, "eval")


def losses(out) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_rm_demo_learns_saves_and_reloads_with_equal_scores(tmp_path):
    """The demo (no --data): its generated short-answer preferences and settings."""
    out = tmp_path / "rm"
    summary = llm_run("--stage", "rm", "--logging_steps", "1", "--output_dir", str(out))
    print({k: summary[k] for k in ("pair_accuracy_before", "pair_accuracy_after",
                                   "eval_pair_loss_before", "eval_pair_loss_after")})
    assert summary["stage"] == "rm" and summary["demo"] and summary["steps"] == 60
    assert summary["eval_pair_loss_after"] < summary["eval_pair_loss_before"] - 0.05
    assert summary["pair_accuracy_after"] >= summary["pair_accuracy_before"] + 0.05
    assert summary["pair_accuracy_after"] >= 0.55
    loss = losses(out)  # the training loss falls too
    assert np.mean([loss[s] for s in range(51, 61)]) < np.mean([loss[s] for s in range(1, 11)]) - 0.03

    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForSequenceClassification"]
    assert (out / "tokenizer.json").is_file()
    model = RewardModel.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    rows = [tokenizer.encode("Count: a b c"), tokenizer.encode("Next letter after f:")]
    ids, mask = pad_rows(rows, tokenizer.pad_token_id)
    again = RewardModel.from_pretrained(out)(paddle.to_tensor(ids), paddle.to_tensor(mask))
    scores = model(paddle.to_tensor(ids), paddle.to_tensor(mask))
    np.testing.assert_allclose(scores.numpy(), again.numpy(), rtol=0, atol=0)
    # the saved model scores the held-out pairs as the run's final evaluation did
    from paddlellm_align.data import parse_record
    from paddlellm_align.reward_model import encode_preferences, pair_accuracy

    rows = [r for r in demo_preferences(200, split="eval", seed=42) if r["task"] in TASKS]
    held = encode_preferences(tokenizer, [parse_record(r, "demo", False) for r in rows], 64)
    assert len(held) == summary["eval_pairs"]
    assert pair_accuracy(model, held)["accuracy"] == pytest.approx(
        summary["pair_accuracy_after"], abs=1e-9)


def test_interrupted_rm_run_resumes_to_the_same_losses(data, tmp_path):
    train, dev = data
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("--data", train, "--eval_data", dev, "--max_steps", "4", "--save_steps", "2",
            *COMMON)
    a = llm_run("--output_dir", str(straight), *args)
    ckpt = straight / "checkpoint-2"
    assert json.loads((ckpt / "config.json").read_text())["architectures"] == [
        "Qwen2ForSequenceClassification"]
    cut.mkdir()
    shutil.copytree(ckpt, cut / ckpt.name)
    (cut / "metrics.jsonl").write_text("".join(
        line + "\n" for line in (straight / "metrics.jsonl").read_text().splitlines()
        if json.loads(line).get("step", 0) <= 2))
    b = llm_run("--output_dir", str(cut), *args, "--resume")
    assert b["resumed_from"] == str(cut / ckpt.name)
    assert sorted(losses(cut)) == [1, 2, 3, 4]
    assert losses(cut) == pytest.approx(losses(straight), abs=1e-6)
    assert b["eval_pair_loss_after"] == pytest.approx(a["eval_pair_loss_after"], abs=1e-6)


def test_rm_with_peft_is_a_clear_error(data, tmp_path):
    with pytest.raises(ConfigError, match="rm stage trains all parameters.*drop --peft"):
        llm_run("--data", data[0], "--peft", "lora", "--output_dir", str(tmp_path), *COMMON)


def test_too_few_pairs_is_a_clear_error(tmp_path):
    one = write_pairs(tmp_path / "one.jsonl", 4, "train")  # a single pair: none left to train
    assert len(open(one).read().splitlines()) == 1
    with pytest.raises(ConfigError, match="needs training and held-out pairs;.*gives 0 and 1"):
        llm_run("--data", one, "--output_dir", str(tmp_path / "out"), *COMMON)


def test_margin_and_centering_options_reach_the_loss(data, tmp_path):
    """An untrained head scores both responses near 0: the first loss is about log 2 without
    a margin and about log(1 + e) with --margin 1."""
    base = llm_run("--data", data[0], "--max_steps", "1", "--output_dir", str(tmp_path / "a"),
                   *COMMON)
    opts = llm_run("--data", data[0], "--max_steps", "1", "--output_dir", str(tmp_path / "b"),
                   "--margin", "1", "--center_rewards_coefficient", "0.01", *COMMON)
    assert base["train_loss_first"] == pytest.approx(np.log(2), abs=0.05)
    assert opts["train_loss_first"] == pytest.approx(np.log1p(np.e), abs=0.05)
    assert opts["margin"] == 1.0 and opts["center_rewards_coefficient"] == 0.01


def test_align_rm_is_the_rm_stage():
    registry = get_plugin_manager().registry
    config = build_run_config(None, ["--align", "rm", "--margin", "0.5"], registry=registry)
    assert (config.stage, config.align) == ("rm", None)
    assert config.plugin_options["stage"].margin == 0.5
    dpo = build_run_config(None, ["--align", "dpo"], registry=registry)
    assert (dpo.stage, dpo.align) == ("align", "dpo")  # a loss stays a loss


def test_llm_plugins_lists_the_rm_stage():
    out = subprocess.run([sys.executable, "-c", "from paddlellm.cli import main; main()",
                          "plugins", "--kind", "stage"], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"│ stage\s*│ rm\s*│ .*│ paddlellm-align", out), out
