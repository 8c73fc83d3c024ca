"""The newcomer's path: the headline command means what it says and leaves a model to talk to.

``llm run --model qwen --peft lora --align dpo`` (small step counts) saves the SFT base under
the output folder and a LoRA adapter naming it; ``llm predict --model_name_or_path <output>``
loads base + adapter and answers the held-out questions at the rate the run reported.
``--model`` is honoured by every stage: a family without a bundled demo model gets one built
(and cached), a checkpoint of another family is refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import ROOT, run_cli

QWEN_DEMO = ROOT / "core" / "paddlellm" / "assets" / "qwen-demo"
STEPS = 20
EVAL = 32


@pytest.fixture(scope="module")
def headline(tmp_path_factory):
    out = tmp_path_factory.mktemp("headline") / "output"
    proc = run_cli("run", "--model", "qwen", "--peft", "lora", "--align", "dpo",
                   "--max_steps", str(STEPS), "--logging_steps", "10",
                   "--demo_sft_learning_rate", "5e-3", "--demo_train_records", "96",
                   "--demo_on_policy_records", "32", "--demo_eval_records", str(EVAL),
                   "--output_dir", str(out), check=True, timeout=900)
    return out, proc


def test_headline_run_saves_its_base_and_an_adapter_that_names_it(headline):
    out, proc = headline
    base = out / "sft-base"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "run_config.json"):
        assert (base / name).is_file(), name
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["peft_type"] == "LORA"
    assert adapter["base_model_name_or_path"] == str(base.resolve())
    assert json.loads((base / "config.json").read_text())["model_type"] == "qwen2"
    # what it prints: both phase headings and the before/after table (the JSON is a file)
    assert "== SFT (demo phase 1 of 2" in proc.stderr
    assert "== DPO (demo phase 2 of 2" in proc.stderr
    assert f"| held-out ({EVAL} questions never seen in training) | after SFT, before DPO | " \
           "after DPO |" in proc.stdout
    assert "| exact match |" in proc.stdout and '"eval_before"' not in proc.stdout
    assert json.loads((out / "run_summary.json").read_text())["stage"] == "align"


def test_user_flags_win_in_both_phases_and_run_config_records_what_was_used(headline):
    out, _ = headline
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["steps"] == STEPS and summary["sft"]["steps"] == STEPS  # --max_steps: both
    used = json.loads((out / "run_config.json").read_text())
    assert used["max_steps"] == STEPS
    assert used["learning_rate"] == 1e-3 and used["max_length"] == 128  # the demo's values
    assert used["demo_sft_steps"] == STEPS and used["demo_sft_learning_rate"] == 5e-3
    assert used["sft_loss_ratio"] == 1.0
    sft_used = json.loads((out / "sft-base" / "run_config.json").read_text())
    assert sft_used["max_steps"] == STEPS and sft_used["learning_rate"] == 5e-3
    assert sft_used["zero_padding"] is True and sft_used["stage"] == "sft"


def test_predict_on_the_output_folder_answers_at_the_reported_rate(headline, tmp_path):
    from paddlellm_align.demo import demo_preferences

    out, _ = headline
    summary = json.loads((out / "run_summary.json").read_text())
    held = demo_preferences(EVAL, split="eval", seed=42)
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"src": r["src"][0]}) + "\n" for r in held))
    answers = tmp_path / "answers.jsonl"
    run_cli("predict", "--model-name-or-path", str(out), "--input_file", str(questions),
            "--output_file", str(answers), "--batch_size", "16", "--max_length", "128",
            "--decode_strategy", "greedy_search", check=True)
    got = [json.loads(line)["output"] for line in answers.read_text().splitlines()]
    rate = sum(g.strip() == r["answer"] for g, r in zip(got, held)) / len(held)
    # the merged adapter in the paged engine decodes as the run's model.generate did; a
    # near-tie may flip in float32, so allow one question
    assert abs(rate - summary["exact_match_after"]) <= 1 / EVAL + 1e-9, (rate, summary)


def test_a_family_without_a_bundled_demo_model_gets_one_built_and_cached(tmp_path, capfd):
    """``--model llama-tiny --stage sft``: a llama demo model is pretrained on the demo corpus
    (here for 3 steps, in process), cached, then fine-tuned: a llama checkpoint comes out."""
    from paddlellm.modeling.auto import family_by_name
    from paddlellm.plugin.config import RunConfig
    from paddlellm.training.start import build_demo_model, demo_cache_dir, resolve_run_model
    from paddlellm.plugin.manager import get_plugin_manager
    from paddlellm.training.compose import compose

    cache = tmp_path / "cache"
    monkey = pytest.MonkeyPatch()
    monkey.setenv("XDG_CACHE_HOME", str(cache))
    try:
        target = demo_cache_dir() / "llama"
        assert target == cache / "paddlellm" / "demo-models" / "llama"
        ctx = compose(RunConfig(model="llama-tiny", output_dir=str(tmp_path / "x")),
                      get_plugin_manager())
        build_demo_model(ctx, family_by_name("llama-tiny"), target, max_steps=3,
                         logging_steps=1)
        assert "No bundled llama demo model: pretraining one" in capfd.readouterr().err
        assert resolve_run_model(ctx) == str(target)  # found in the cache from now on
    finally:
        monkey.undo()
    built = json.loads((target / "config.json").read_text())
    assert built["model_type"] == "llama" and built["hidden_size"] == 128  # demo size
    assert json.loads((target / "BUILD.json").read_text())["recipe"]["max_steps"] == 3

    out = tmp_path / "sft"
    proc = run_cli("run", "--model", "llama-tiny", "--stage", "sft", "--max_steps", "2",
                   "--output_dir", str(out), env={"XDG_CACHE_HOME": str(cache)}, check=True)
    assert f"llama family, the demo model built earlier ({target})" in proc.stderr
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == "llama" and saved["architectures"] == ["LlamaForCausalLM"]
    assert json.loads((out / "run_summary.json").read_text())["model"] == str(target)


@pytest.mark.parametrize("stage", ["sft", "pretrain", "align"])
def test_a_checkpoint_of_another_family_is_refused(tmp_path, stage):
    extra = ["--align", "dpo"] if stage == "align" else []
    proc = run_cli("run", "--model", "llama-tiny", "--stage", stage, *extra,
                   "--model_name_or_path", str(QWEN_DEMO), "--output_dir", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    assert (f"--model llama-tiny names the llama family but --model_name_or_path {QWEN_DEMO} "
            "holds a qwen2 checkpoint") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_out_of_the_box_chat_answers_the_demo_facts():
    """``llm chat`` without a model talks to the bundled instruction-tuned demo model."""
    import os
    import subprocess
    import sys

    from paddlellm.data.demo import FACTS

    assert FACTS["eel"] == "gold"
    proc = subprocess.run(
        [sys.executable, "-m", "paddlellm", "chat", "--max_length", "8",
         "--decode_strategy", "greedy_search"],
        input="What colour is the eel?\n/reset\nCount: x i a r\n/exit\n", capture_output=True,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    replies = [line[len("assistant> "):].strip() for line in proc.stdout.splitlines()
               if line.startswith("assistant> ")]
    assert replies == ["gold", "4"]
