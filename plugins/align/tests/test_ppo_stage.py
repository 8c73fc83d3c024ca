"""The ``ppo`` stage: routing and options, the value head saved and restored, exact resume,
and the demo (short)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from paddlellm.api import INSTRUCT_DEMO_MODEL
from paddlellm.errors import ConfigError
from paddlellm.plugin.config import build_run_config
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm_align.ppo_stage import epoch_order
from paddlellm_align.prompts import demo_prompts
from align_testutil import by_step, llm_run, records

COMMON = ("--model_name_or_path", str(INSTRUCT_DEMO_MODEL), "--align", "ppo",
          "--per_device_train_batch_size", "4", "--max_completion_length", "8",
          "--max_length", "96", "--learning_rate", "1e-4", "--logging_steps", "1",
          "--lr_scheduler_type", "constant")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ppo")
    for name, n, split in (("train", 16, "train"), ("dev", 4, "eval")):
        rows = demo_prompts(n, split=split, seed=3, tasks=("next", "count"))
        (folder / f"{name}.jsonl").write_text("".join(
            json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n" for r in rows))
    return str(folder / "train.jsonl"), str(folder / "dev.jsonl")


def test_align_ppo_routes_to_the_stage_with_trl_option_names():
    registry = get_plugin_manager().registry
    config = build_run_config(None, ["--align", "ppo", "--reward", "exact_match",
                                     "--num_ppo_epochs", "2", "--num_mini_batches", "2",
                                     "--kl_coef", "0.1", "--cliprange", "0.3",
                                     "--cliprange_value", "0.4", "--vf_coef", "0.5",
                                     "--gamma", "0.9", "--lam", "0.8", "--whiten_rewards",
                                     "true", "--response_length", "12", "--temperature", "0.7",
                                     "--missing_eos_penalty", "1.0"], registry=registry)
    assert (config.stage, config.reward) == ("ppo", "exact_match")
    o = config.plugin_options["stage"]
    assert (o.num_ppo_epochs, o.num_mini_batches, o.kl_coef, o.cliprange, o.cliprange_value,
            o.vf_coef, o.gamma, o.lam, o.whiten_rewards, o.max_completion_length,
            o.temperature, o.missing_eos_penalty) == (2, 2, 0.1, 0.3, 0.4, 0.5, 0.9, 0.8, True,
                                                      12, 0.7, 1.0)
    rm = build_run_config(None, ["--align", "ppo", "--reward", "reward_model",
                                 "--reward_model_path", "x"], registry=registry)
    assert rm.plugin_options["reward"].reward_model_path == "x"


def test_llm_plugins_lists_the_ppo_stage():
    out = subprocess.run([sys.executable, "-c", "from paddlellm.cli import main; main()",
                          "plugins", "--kind", "stage"], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"│ stage\s*│ ppo\s*│ .*│ paddlellm-align", out), out


def test_option_errors_name_the_options(prompts, tmp_path):
    train, _ = prompts
    with pytest.raises(ConfigError, match="the ppo stage needs a reward: --reward"):
        llm_run("--data", train, *COMMON, "--output_dir", str(tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"--save_steps 3 must be a multiple of "
                                          r"--num_mini_batches x --num_ppo_epochs = 4"):
        llm_run("--data", train, *COMMON, "--num_ppo_epochs", "2", "--num_mini_batches", "2",
                "--save_steps", "3", "--reward", "exact_match",
                "--output_dir", str(tmp_path / "b"))


def test_each_ppo_epoch_reshuffles_the_rollout_rows_reproducibly():
    orders = [epoch_order(3, 5, epoch, 16) for epoch in range(3)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(16))
    assert orders[0].tolist() != orders[1].tolist() != orders[2].tolist()
    assert epoch_order(3, 5, 1, 16).tolist() == orders[1].tolist()  # what --resume relies on
    assert epoch_order(3, 6, 1, 16).tolist() != orders[1].tolist()  # per rollout batch
    assert epoch_order(4, 5, 1, 16).tolist() != orders[1].tolist()  # per --seed


def test_interrupted_ppo_run_resumes_to_the_same_trajectory(prompts, tmp_path):
    """All parameters (the reference: a frozen copy), the value head restored from
    value_head.safetensors, two epochs per rollout batch of 4 prompts, each epoch cut into
    two reshuffled micro-batches of 2 (gradient accumulation)."""
    train, held = prompts
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("--data", train, "--eval_data", held, *COMMON, "--max_steps", "4", "--save_steps",
            "2", "--num_ppo_epochs", "2", "--reward", "exact_match", "--kl_coef", "0.1",
            "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "2")
    a = llm_run("--output_dir", str(straight), *args)
    assert a["reference"] == "frozen copy" and a["reward"] == "exact_match"
    ckpt = straight / "checkpoint-2"
    assert (ckpt / "value_head.safetensors").is_file()
    assert (straight / "value_head.safetensors").is_file()
    heads = [load_file(str(d / "value_head.safetensors"))["weight"] for d in (ckpt, straight)]
    assert np.abs(heads[0] - heads[1]).max() > 0  # the value head trains with the policy
    cut.mkdir()
    shutil.copytree(ckpt, cut / ckpt.name)
    (cut / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in records(straight) if r.get("step", 0) <= 2))
    b = llm_run("--output_dir", str(cut), *args, "--resume")
    assert b["resumed_from"] == str(cut / ckpt.name)
    for key in ("loss", "reward", "kl", "value_loss", "clipfrac", "completion_length"):
        la, lb = by_step(straight, key), by_step(cut, key)
        assert sorted(lb) == [1, 2, 3, 4], key
        assert lb == pytest.approx(la, abs=1e-5), key
    assert by_step(straight, "kl")[3] != 0  # the policy moved away from the reference
    assert b["eval_reward_after"] == pytest.approx(a["eval_reward_after"], abs=1e-9)


def test_ppo_with_lora_trains_saves_in_peft_layout_and_resumes(prompts, tmp_path,
                                                               monkeypatch):
    """--peft lora: the reference is the policy with its adapters disabled (no copy of the
    weights is made: copying or reloading the starting model fails here), the adapter is
    saved in peft's layout with the value head beside it, and --resume reproduces the
    trajectory."""
    import paddlellm_align.rl_common as rl_common
    from paddlellm.training.session import TrainingSession

    def no_copy(*args, **kwargs):
        raise AssertionError("a second copy of the model was made")

    monkeypatch.setattr(rl_common, "copy", SimpleNamespace(deepcopy=no_copy))
    monkeypatch.setattr(TrainingSession, "starting_model", no_copy)
    train, held = prompts
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("--data", train, "--eval_data", held, *COMMON, "--max_steps", "4", "--save_steps",
            "2", "--num_ppo_epochs", "2", "--reward", "exact_match", "--kl_coef", "0.1",
            "--peft", "lora", "--learning_rate", "3e-3")
    a = llm_run("--output_dir", str(straight), *args)
    assert a["reference"] == "adapters disabled" and a["peft"] == "lora"
    assert 0 < a["trainable_params"] < a["total_params"]
    for folder in (straight / "checkpoint-2", straight):
        assert (folder / "adapter_config.json").is_file(), folder
        assert (folder / "adapter_model.safetensors").is_file(), folder
        assert (folder / "value_head.safetensors").is_file(), folder
        assert not (folder / "model.safetensors").exists(), folder
    adapter = json.loads((straight / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert adapter["base_model_name_or_path"] == str(INSTRUCT_DEMO_MODEL)
    assert all(k.startswith("base_model.model.") and "lora_" in k
               for k in load_file(str(straight / "adapter_model.safetensors")))
    heads = [load_file(str(d / "value_head.safetensors"))["weight"]
             for d in (straight / "checkpoint-2", straight)]
    assert np.abs(heads[0] - heads[1]).max() > 0  # the value head trains with the adapter
    logged = [r for r in records(straight) if "loss" in r]
    assert [r["step"] for r in logged] == [1, 2, 3, 4]
    assert all(np.isfinite(r["reward"]) and r["value_loss"] >= 0 for r in logged)
    assert by_step(straight, "kl")[4] != 0  # the adapters moved away from the reference
    cut.mkdir()
    shutil.copytree(straight / "checkpoint-2", cut / "checkpoint-2")
    (cut / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in records(straight) if r.get("step", 0) <= 2))
    b = llm_run("--output_dir", str(cut), *args, "--resume")
    assert b["resumed_from"] == str(cut / "checkpoint-2")
    for key in ("loss", "reward", "kl", "value_loss"):
        assert by_step(cut, key) == pytest.approx(by_step(straight, key), abs=1e-5), key
    assert b["eval_reward_after"] == pytest.approx(a["eval_reward_after"], abs=1e-9)


def test_ppo_demo_runs_from_the_instruct_model_with_the_rule_reward(tmp_path):
    summary = llm_run("--align", "ppo", "--max_steps", "2", "--demo_eval_prompts", "10",
                      "--per_device_train_batch_size", "8", "--num_ppo_epochs", "2",
                      "--output_dir", str(tmp_path / "demo"))
    assert summary["demo"] and summary["stage"] == "ppo" and summary["reward"] == "exact_match"
    assert summary["model"] == str(INSTRUCT_DEMO_MODEL) and summary["steps"] == 2
    first = [r for r in records(tmp_path / "demo") if "loss" in r][0]
    assert 0 <= first["reward"] <= 1 and first["value_loss"] >= 0
    assert 0 < summary["rollout_share"] < 1


def test_ppo_demo_raises_held_out_exact_match(tmp_path):
    """The demo as it runs (24 steps, rollout batches of 64, two PPO epochs; no mid-run
    evaluation): greedy exact match on 200 held-out sort questions, never trained on, rises
    over the instruction-tuned starting model."""
    summary = llm_run("--align", "ppo", "--eval_steps", "100",
                      "--output_dir", str(tmp_path / "demo"))
    print({k: summary[k] for k in ("exact_match_before", "exact_match_after", "rollout_share")})
    assert summary["eval_prompts"] == 200 and summary["steps"] == 24
    assert summary["exact_match_after"] >= summary["exact_match_before"] + 0.05


def test_ppo_demo_with_a_trained_reward_model_raises_held_out_reward(tmp_path):
    """``--reward reward_model`` without a path: the rm stage trains a reward model on the
    demo's sort preferences (on-policy pairs) from the instruct model, then PPO raises the
    reward model's mean score of greedy completions of held-out questions (never trained on,
    by the demo's split). Independent checks: the reward model ranks held-out pairs better
    than chance, and exact match against the right answers does not collapse (the rise is
    not the policy drifting into text the reward model overrates)."""
    out = tmp_path / "demo"
    summary = llm_run("--align", "ppo", "--reward", "reward_model", "--max_steps", "12",
                      "--demo_rm_steps", "40", "--demo_eval_prompts", "100",
                      "--eval_steps", "100", "--output_dir", str(out))
    rm = summary["reward_model"]
    print({k: summary[k] for k in ("eval_reward_before", "eval_reward_after",
                                   "exact_match_before", "exact_match_after")}, rm)
    assert rm["saved_to"] == str((out / "reward-model").resolve()) and rm["steps"] == 40
    assert rm["tasks"] == ["sort"] and rm["pair_accuracy_after"] > 0.55
    used = json.loads((out / "run_config.json").read_text())
    assert used["reward_model_path"] == rm["saved_to"]  # recorded as the reward's option
    assert (out / "reward-model" / "config.json").is_file()
    train = {r.prompt for r in demo_prompts(2000, split="train", seed=42, tasks=("sort",))}
    held = {r.prompt for r in demo_prompts(100, split="eval", seed=42, tasks=("sort",))}
    assert not train & held
    assert summary["eval_prompts"] == 100 and summary["steps"] == 12
    assert summary["eval_reward_after"] >= summary["eval_reward_before"] + 0.25
    assert summary["exact_match_after"] >= summary["exact_match_before"] - 0.05
