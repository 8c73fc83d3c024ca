"""``llm run --stage sft``: the demo learns; data files, zero padding and errors."""
from __future__ import annotations

import json

import pytest

from helpers import run_cli
from paddlellm.data.demo import demo_examples


def test_sft_demo_raises_held_out_exact_match(tmp_path):
    out = tmp_path / "demo"
    proc = run_cli("run", "--model", "qwen", "--stage", "sft", "--output_dir", str(out),
                   "--max_steps", "200", "--logging_steps", "50", check=True)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo"] is True and summary["eval_examples"] == 300
    assert summary["demo_defaults"]["learning_rate"] == 2e-3  # unset options take demo values
    used = json.loads((out / "run_config.json").read_text())  # records the values used
    assert used["learning_rate"] == 2e-3 and used["max_length"] == 128
    assert summary["exact_match_before"] < 0.05
    assert summary["exact_match_after"] > summary["exact_match_before"] + 0.15
    assert summary["eval_loss_after"] < 0.5 * summary["eval_loss_before"]
    assert "| exact match |" in proc.stdout  # the before/after table


def test_sft_on_a_jsonl_file_with_zero_padding(tmp_path):
    rows = demo_examples(64, split="train", seed=3)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"src": r["src"], "tgt": r["tgt"]}) + "\n" for r in rows[:48])
                    + json.dumps({"messages": [{"role": "user", "content": "Count: a b"},
                                               {"role": "assistant", "content": "2"}]}) + "\n")
    dev = tmp_path / "dev.jsonl"
    dev.write_text("".join(json.dumps({"src": r["src"], "tgt": r["tgt"]}) + "\n" for r in rows[48:]))
    out = tmp_path / "out"
    run_cli("run", "--stage", "sft", "--data", str(data), "--eval_data", str(dev),
            "--zero_padding", "--max_length", "128", "--max_steps", "4",
            "--per_device_train_batch_size", "2", "--output_dir", str(out), check=True)
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo"] is False and summary["train_examples"] == 49
    assert summary["padding_ratio"] < summary["padding_ratio_unpacked"]
    assert summary["eval_examples"] == 16 and 0.0 <= summary["exact_match_after"] <= 1.0
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()


def test_malformed_sft_data_fails_naming_the_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"src": "a", "tgt": "b"}\n{"src": "a"}\n')
    proc = run_cli("run", "--stage", "sft", "--data", str(data), "--output_dir",
                   str(tmp_path / "o"))
    assert proc.returncode == 2
    assert f"{data}:2: expected 'src' and 'tgt'" in proc.stderr
