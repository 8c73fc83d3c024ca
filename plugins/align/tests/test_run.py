"""``llm run --align ...``: every loss type trains; the shortened demo (LoRA SFT, then DPO)."""
from __future__ import annotations

import json

import pytest

from paddlellm.plugin.config import build_run_config
from paddlellm.errors import ConfigError, UnknownPluginError
from paddlellm_align.demo import demo_preferences
from align_testutil import llm_run


def write(path, rows):
    path.write_text("".join(json.dumps({k: r[k] for k in ("src", "tgt", "response", "sort")})
                            + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Eight pairs (and eight KTO examples) of short-answer demo tasks: one batch, trained on
    for a few steps and evaluated on itself, so learning must show in the held-out numbers."""
    root = tmp_path_factory.mktemp("pref")
    tasks = ("count", "next", "fact")  # short answers: quick to train
    pick = lambda rows: [r for r in rows if r["task"] in tasks][:8]
    return {
        "pairs": write(root / "pairs.jsonl", pick(demo_preferences(60, seed=7))),
        "kto": write(root / "kto.jsonl", pick(demo_preferences(60, seed=7, pointwise=True))),
    }


COMMON = ("--max_steps", "4", "--per_device_train_batch_size", "8", "--learning_rate", "5e-4",
          "--logging_steps", "2", "--max_length", "128", "--save_steps", "1000")


@pytest.mark.parametrize("align, extra", [
    ("dpo", ()),
    ("dpo", ("--loss_type", "hinge", "--beta", "0.5", "--pair_layout", "packed")),
    ("ipo", ("--beta", "0.5")),
    ("simpo", ("--beta", "2.0", "--simpo_gamma", "0.5", "--label_smoothing", "0.1")),
    ("orpo", ("--beta", "0.2")),
    ("dpo", ("--precompute_ref_logps", "--sft_loss_ratio", "0.5", "--label_smoothing", "0.1")),
])
def test_each_pairwise_loss_trains_through_llm_run(data, tmp_path, align, extra):
    out = tmp_path / "run"
    summary = llm_run("--align", align, "--data", data["pairs"], "--eval_data", data["pairs"],
                      "--output_dir", str(out), *COMMON, *extra)
    assert summary["stage"] == "align" and summary["steps"] == 4
    want_type = align if align != "dpo" else "hinge" if "hinge" in extra else "sigmoid"
    assert summary["loss_type"] == want_type
    assert summary["eval_after"]["eval_pref_loss"] < summary["eval_before"]["eval_pref_loss"]
    want_ref = ("none" if align in ("simpo", "orpo") else
                "precomputed" if "--precompute_ref_logps" in extra else "frozen copy")
    assert summary["reference"] == want_ref
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "loss" in r]
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                "logps/chosen", "logps/rejected"):
        assert all(key in r for r in train), key
    assert (out / "model.safetensors").is_file()


def test_kto_trains_with_lora_and_no_reference_copy(data, tmp_path):
    out = tmp_path / "kto"
    summary = llm_run("--align", "kto", "--peft", "lora", "--data", data["kto"],
                      "--eval_data", data["kto"], "--output_dir", str(out),
                      "--desirable_weight", "1.0", "--undesirable_weight", "1.2", *COMMON,
                      "--learning_rate", "5e-3")
    assert summary["reference"] == "adapters disabled" and summary["peft"] == "lora"
    assert summary["eval_after"]["eval_loss"] < summary["eval_before"]["eval_loss"]
    assert "eval_kl" in summary["eval_after"] and "kl" in summary["train_metrics_last"]
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()


def test_bad_options_are_clear_errors(data, tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'desirable_weight'"):
        llm_run("--align", "dpo", "--desirable_weight", "1", "--data", data["pairs"])
    with pytest.raises(UnknownPluginError, match="unknown alignment_loss 'dpx'"):
        llm_run("--align", "dpx", "--data", data["pairs"])
    with pytest.raises(ConfigError, match="--align simpo conflicts with --loss_type sigmoid"):
        llm_run("--align", "simpo", "--loss_type", "sigmoid", "--data", data["pairs"],
                "--output_dir", str(tmp_path / "x"))
    with pytest.raises(ConfigError, match="the align stage needs an alignment loss"):
        llm_run("--stage", "align", "--data", data["pairs"], "--output_dir", str(tmp_path / "y"))
    assert build_run_config(None, ["--align", "dpo"]).stage == "align"
    assert build_run_config(None, ["--align", "dpo", "--stage", "sft"]).stage == "sft"


def test_shortened_demo_lora_sft_then_dpo(tmp_path):
    """``llm run --model qwen --peft lora --align dpo`` without data, shortened: SFT, then DPO
    with a LoRA adapter lowers the held-out loss and raises held-out preference accuracy."""
    out = tmp_path / "demo"
    summary = llm_run("--model", "qwen", "--peft", "lora", "--align", "dpo",
                      "--output_dir", str(out), "--demo_sft_steps", "15",
                      "--demo_train_records", "240", "--demo_eval_records", "36",
                      "--demo_on_policy_records", "32", "--max_steps", "12",
                      "--learning_rate", "5e-3", "--eval_steps", "100",
                      "--demo_sft_learning_rate", "2e-3")  # else --learning_rate: both phases
    assert summary["demo"] and summary["sft"]["steps"] == 15 and summary["peft"] == "lora"
    assert summary["sft"]["learning_rate"] == 2e-3
    assert summary["sft"]["loss_last"] < summary["sft"]["loss_first"]
    assert summary["reference"] == "adapters disabled" and summary["sft_loss_ratio"] == 1.0
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    assert summary["eval_pref_accuracy_after"] > summary["eval_pref_accuracy_before"]
    assert "exact_match_before" in summary and "exact_match_after" in summary
    assert (out / "sft_metrics.jsonl").is_file() and (out / "adapter_config.json").is_file()


def test_kto_demo_runs_on_pointwise_data_and_reports_pair_accuracy(tmp_path):
    summary = llm_run("--align", "kto", "--output_dir", str(tmp_path / "kto_demo"),
                      "--demo_sft_steps", "0", "--max_steps", "2", "--demo_train_records", "32",
                      "--demo_eval_records", "8", "--demo_on_policy_records", "0")
    assert summary["demo"] and summary["reference"] == "frozen copy"
    assert summary["train_examples"] == 32 and "eval_kl" in summary["eval_after"]
    assert 0 <= summary["eval_pref_accuracy_after"] <= 1
