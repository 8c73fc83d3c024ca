"""``llm run --peft lora``: learning on the demo model, adapter-only outputs, resume, export."""
from __future__ import annotations

import json
import shutil

import numpy as np
import paddle
import pytest

from helpers import run_cli
from paddlellm import AutoModelForCausalLM
from paddlellm.checkpoint import CheckpointReader
from paddlellm.data.demo import demo_examples
from paddlellm.models import DEMO_MODEL_DIR


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps({"src": r["src"], "tgt": r["tgt"]}) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def count_data(tmp_path_factory):
    """Demo "count" instructions: 320 to train on, 40 held out."""
    root = tmp_path_factory.mktemp("count")
    train = [r for r in demo_examples(3000, split="train", seed=1) if r["task"] == "count"][:320]
    held = [r for r in demo_examples(600, split="eval", seed=1) if r["task"] == "count"][:40]
    return write_jsonl(root / "train.jsonl", train), write_jsonl(root / "dev.jsonl", held)


def adapter_tensors(directory):
    with CheckpointReader(directory / "adapter_model.safetensors") as reader:
        return {k: reader.get_numpy(k) for k in reader.keys()}


def test_lora_sft_raises_held_out_exact_match_and_exports(count_data, tmp_path):
    train, dev = count_data
    out = tmp_path / "run"
    proc = run_cli("run", "--stage", "sft", "--peft", "lora", "--data", str(train),
                   "--eval_data", str(dev), "--max_steps", "30", "--learning_rate", "5e-3",
                   "--warmup_steps", "3", "--lr_scheduler_type", "cosine", "--max_length", "64",
                   "--logging_steps", "10", "--output_dir", str(out), check=True)
    assert "[lora] trainable params: 74,752 || all params: 860,160 || trainable%: 8.6905" in proc.stdout
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["peft"] == "lora" and summary["trainable_params"] == 74752
    assert summary["trainable_percent"] < 10
    assert summary["exact_match_before"] < 0.1
    assert summary["exact_match_after"] > summary["exact_match_before"] + 0.5
    # the output is the adapter (peft format) and the tokenizer, not the model
    assert (out / "adapter_config.json").is_file() and (out / "tokenizer.json").is_file()
    assert not (out / "model.safetensors").exists()
    assert len(adapter_tensors(out)) == 4 * 7 * 2  # 4 layers x 7 projections x (A, B)

    # llm export --merge-adapter: a normal checkpoint with the adapted model's logits
    merged = tmp_path / "merged"
    run_cli("export", "--model_name_or_path", str(DEMO_MODEL_DIR), "--lora_path", str(out),
            "--merge-adapter", "--output_dir", str(merged), check=True)
    assert not (merged / "adapter_config.json").exists() and (merged / "tokenizer.json").is_file()
    ids = paddle.to_tensor(np.random.default_rng(0).integers(3, 300, (2, 12)))
    with paddle.no_grad():
        adapted = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR, lora_path=out)(ids).numpy()
        plain = AutoModelForCausalLM.from_pretrained(merged)(ids).numpy()
        base = AutoModelForCausalLM.from_pretrained(DEMO_MODEL_DIR)(ids).numpy()
    assert np.abs(plain - adapted).max() <= 1e-5 * np.abs(adapted).max()
    assert np.abs(base - adapted).max() > 1e-2


def test_interrupted_pissa_lora_plus_run_resumes_from_its_adapter_checkpoint(count_data, tmp_path):
    train, _ = count_data
    args = ["--stage", "sft", "--peft", "lora", "--pissa", "--lora_rank", "4",
            "--lora_plus_scale", "4", "--target_modules", ".*(q|v)_proj", "--data", str(train),
            "--max_steps", "4", "--save_steps", "2", "--logging_steps", "1",
            "--learning_rate", "1e-3", "--max_length", "64", "--per_device_train_batch_size", "4"]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    run_cli("run", "--output_dir", str(straight), *args, check=True)
    ckpt = straight / "checkpoint-2"
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "optimizer.json", "optimizer.safetensors",
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "trainer_state.json"]
    assert json.loads((ckpt / "adapter_config.json").read_text())["r"] == 8  # PiSSA saved as 2r
    # "interrupted" after step 2: only its checkpoint and the metrics up to it remain
    cut.mkdir()
    shutil.copytree(ckpt, cut / "checkpoint-2")
    lines = (straight / "metrics.jsonl").read_text().splitlines()
    (cut / "metrics.jsonl").write_text("".join(
        l + "\n" for l in lines if json.loads(l).get("step", 0) <= 2 and "exact_match" not in l))
    run_cli("run", "--output_dir", str(cut), "--resume", *args, check=True)
    a = json.loads((straight / "run_summary.json").read_text())
    b = json.loads((cut / "run_summary.json").read_text())
    assert b["steps"] == 4 and b["train_loss_last"] == pytest.approx(a["train_loss_last"], rel=1e-5)
    assert b["eval_loss_after"] == pytest.approx(a["eval_loss_after"], rel=1e-5)
    ta, tb = adapter_tensors(straight), adapter_tensors(cut)
    assert ta.keys() == tb.keys()
    for key in ta:
        np.testing.assert_allclose(tb[key], ta[key], atol=1e-6, err_msg=key)


def test_pretrain_with_lora_on_a_base_and_option_errors(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("".join(f"Repeat: a b c {i}\n" for i in range(40)))
    out = tmp_path / "pre"
    proc = run_cli("run", "--stage", "pretrain", "--peft", "lora", "--use_dora",
                   "--model_name_or_path", str(DEMO_MODEL_DIR), "--data", str(text),
                   "--max_steps", "2", "--max_length", "32", "--output_dir", str(out), check=True)
    assert "[lora] trainable params:" in proc.stdout
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text())["use_dora"] is True

    proc = run_cli("run", "--stage", "pretrain", "--peft", "lora", "--output_dir", str(out))
    assert proc.returncode == 2 and "give --model_name_or_path" in proc.stderr
    proc = run_cli("run", "--peft", "lora", "--lora_rnk", "8", "--output_dir", str(out))
    assert proc.returncode == 2 and "closest valid keys: lora_rank" in proc.stderr
    proc = run_cli("run", "--peft", "lorra", "--output_dir", str(out))
    assert proc.returncode == 2 and "did you mean 'lora'" in proc.stderr
