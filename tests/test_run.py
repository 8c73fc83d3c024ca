"""``llm run`` end to end: composition, the demo pretraining, outputs and errors."""
from __future__ import annotations

import json

import pytest

from helpers import run_cli

SMALL = ["--stage", "pretrain", "--max_length", "32", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
         "--logging_steps", "10", "--warmup_steps", "3"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run_cli("run", "--max_steps", "40", "--output_dir", str(out), "--save_steps", "15",
                   "--save_total_limit", "1", "--eval_steps", "20", *SMALL, check=True)
    return out, proc


def test_demo_pretraining_learns(demo_run):
    out, proc = demo_run
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["demo"] is True and summary["steps"] == 40
    assert summary["train_loss_last"] < summary["train_loss_first"] - 1.0
    # held-out perplexity on questions never seen in training falls by more than half
    assert summary["eval_ppl_after"] < 0.5 * summary["eval_ppl_before"]
    assert "| eval perplexity |" in proc.stdout  # the before/after table


def test_run_writes_hf_checkpoint_config_metrics_and_rotated_checkpoints(demo_run):
    out, _ = demo_run
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "run_config.json", "metrics.jsonl"):
        assert (out / name).is_file(), name
    resolved = json.loads((out / "run_config.json").read_text())
    assert resolved["max_steps"] == 40 and resolved["stage"] == "pretrain"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [10, 20, 30, 40]
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 20, 40]  # step 40 once
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-30"]
    assert (out / "checkpoint-30" / "model.safetensors").is_file()
    assert json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["step"] == 30


def test_final_model_reloads_with_the_same_predictions(demo_run):
    import numpy as np
    import paddle

    from paddlellm.modeling.auto import AutoModelForCausalLM
    from paddlellm.tokenizer import AutoTokenizer

    out, _ = demo_run
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    ids = paddle.to_tensor([tok.encode("What is 12 + 30?", add_special_tokens=False)])
    logits = model(ids)
    logits = getattr(logits, "logits", logits).numpy()
    again = AutoModelForCausalLM.from_pretrained(out)(ids)
    np.testing.assert_array_equal(logits, getattr(again, "logits", again).numpy())


def test_config_file_with_flags_winning(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"stage: pretrain\nmax_steps: 2\noutput_dir: {tmp_path / 'o'}\nmax_length: 32\n"
                   "per_device_train_batch_size: 2\n")
    run_cli("run", str(cfg), "--max_steps", "3", check=True)
    summary = json.loads((tmp_path / "o" / "run_summary.json").read_text())
    assert summary["steps"] == 3


@pytest.mark.parametrize("args, message", [
    (["--lerning_rate", "1"], "closest valid keys: learning_rate"),
    (["--stage", "pretrian"], "unknown stage 'pretrian'; did you mean 'pretrain'"),
    (["--model", "qwen9"], "unknown model 'qwen9'"),
    (["--bf16"], "the 'cpu' backend cannot train in bfloat16"),
    (["--device", "gpu"], "'gpu' is installed but not available"),
    (["--max_steps", "x"], "'max_steps'"),
])
def test_bad_runs_fail_with_a_clear_message(tmp_path, args, message):
    proc = run_cli("run", "--output_dir", str(tmp_path / "o"), *args)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_recompute_trains_to_the_same_losses(tmp_path):
    def losses(out, *extra):
        run_cli("run", "--output_dir", str(out), "--max_steps", "3", "--logging_steps", "1",
                "--max_length", "32", "--per_device_train_batch_size", "4", "--stage", "pretrain",
                *extra, check=True)
        return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
                if '"loss"' in line]

    plain = losses(tmp_path / "plain")
    again = losses(tmp_path / "recompute", "--recompute")
    assert len(plain) == 3
    assert again == pytest.approx(plain, rel=1e-5)
