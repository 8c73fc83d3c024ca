"""The ``grpo`` stage: routing and options, prompt files, rollouts through the engine with the
live (LoRA) weights, exact resume, and the demo's learning (held-out exact match rises)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import paddle
import pytest

from paddlellm.api import AutoModelForCausalLM, AutoTokenizer, INSTRUCT_DEMO_MODEL, LLMEngine, \
    SamplingParams, apply_peft
from paddlellm.plugin.config import build_run_config
from paddlellm.errors import ConfigError, DataFormatError
from paddlellm.plugin.manager import get_plugin_manager
from paddlellm_align.prompts import demo_prompts, encode_prompt, parse_prompt, read_prompt_jsonl
from paddlellm_align.rollout import RolloutBatch, completion_logprobs
from align_testutil import by_step, llm_run, records

COMMON = ("--model_name_or_path", str(INSTRUCT_DEMO_MODEL), "--align", "grpo", "--num_generations", "4", "--per_device_train_batch_size", "8",
          "--max_completion_length", "8", "--max_length", "96", "--learning_rate", "1e-4",
          "--logging_steps", "1", "--lr_scheduler_type", "constant")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grpo")
    rows = demo_prompts(16, split="train", seed=3, tasks=("next", "count"))
    train = folder / "train.jsonl"
    train.write_text("".join(json.dumps({"prompt": r.prompt, "answer": r.answer}) + "\n"
                             for r in rows))
    held = folder / "dev.jsonl"  # the messages form: the assistant turn is the answer
    held.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.answer}]})
        + "\n" for r in demo_prompts(6, split="eval", seed=3, tasks=("next", "count"))))
    return str(train), str(held)


def test_align_grpo_routes_to_the_stage_with_trl_option_names():
    registry = get_plugin_manager().registry
    config = build_run_config(None, ["--align", "grpo", "--reward", "exact_match", "--beta",
                                     "0.04", "--loss_type", "dr_grpo", "--num_generations", "4",
                                     "--epsilon_high", "0.28", "--scale_rewards", "none"],
                              registry=registry)
    assert (config.stage, config.align, config.reward) == ("grpo", None, "exact_match")
    opts = config.plugin_options["stage"]
    assert (opts.beta, opts.loss_type, opts.num_generations, opts.epsilon_high,
            opts.scale_rewards) == (0.04, "dr_grpo", 4, 0.28, "none")
    rm = build_run_config(None, ["--align", "grpo", "--reward", "reward_model",
                                 "--reward_model_path", "x"], registry=registry)
    assert rm.plugin_options["reward"].reward_model_path == "x"  # the reward's own options
    with pytest.raises(Exception, match="unknown reward|reward 'nope'|nope"):
        build_run_config(None, ["--align", "grpo", "--reward", "nope"], registry=registry)


def test_llm_plugins_lists_the_grpo_stage():
    out = subprocess.run([sys.executable, "-c", "from paddlellm.cli import main; main()",
                          "plugins", "--kind", "stage"], capture_output=True, text=True,
                         check=True).stdout
    assert re.search(r"│ stage\s*│ grpo\s*│ .*│ paddlellm-align", out), out


def test_prompt_records_in_every_form_and_errors_by_line(tmp_path):
    assert parse_prompt({"prompt": "q", "answer": "a"}, "x").answer == "a"
    conv = parse_prompt({"messages": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": "a"}]}, "x")
    assert (conv.prompt, conv.answer) == ([{"role": "user", "content": "q"}], "a")
    src = parse_prompt({"src": ["q1", "q2"], "tgt": ["a1", "a2"]}, "x")
    assert src.answer == "a2" and [m["content"] for m in src.prompt] == ["q1", "a1", "q2"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q"}\n{"question": "q"}\n')
    with pytest.raises(DataFormatError, match=r"bad.jsonl:2: a prompt record needs 'prompt', "
                                              r"'messages' or 'src' \(got keys question\)"):
        read_prompt_jsonl(bad)


def test_rollouts_see_the_live_lora_weights():
    """The engine built around a model with LoRA adapters samples from the adapted weights
    as they are now: its log-probs equal the training forward's, after an optimizer step."""
    model = AutoModelForCausalLM.from_pretrained(INSTRUCT_DEMO_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(INSTRUCT_DEMO_MODEL)
    model = apply_peft(model, "lora")
    engine = LLMEngine.for_model(model, tokenizer, max_model_len=96)
    ids = [encode_prompt(tokenizer, r) for r in demo_prompts(4, split="train", seed=0,
                                                             tasks=("sort",))]
    model.train()
    trainable = [p for p in model.parameters() if not p.stop_gradient]
    opt = paddle.optimizer.SGD(learning_rate=0.5, parameters=trainable)
    for p in trainable:  # move the adapters far from their zero start
        p.set_value(p + paddle.randn(p.shape) * 0.05)
    for step in range(2):
        out = engine.generate(ids, [SamplingParams(max_tokens=8, seed=i, logprobs=0)
                                    for i in range(len(ids))])
        batch = RolloutBatch.from_lists(ids, [o["token_ids"] for o in out], 356)
        with paddle.no_grad():
            logps = completion_logprobs(model, batch).numpy()
        for row, o in zip(logps, out):
            expected = [e["logprob"] for e in o["logprobs"]]
            np.testing.assert_allclose(row[:len(expected)], expected, atol=2e-5)
        loss = -completion_logprobs(model, batch).mean()
        loss.backward()
        opt.step()
        opt.clear_grad()


def test_interrupted_grpo_run_resumes_to_the_same_trajectory(prompts, tmp_path):
    """LoRA, beta > 0 (the reference: adapters disabled), two iterations per generation."""
    train, held = prompts
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("--data", train, "--eval_data", held, *COMMON, "--max_steps", "4", "--save_steps",
            "2", "--peft", "lora", "--learning_rate", "3e-3", "--beta", "0.1",
            "--num_iterations", "2", "--reward", "exact_match")
    a = llm_run("--output_dir", str(straight), *args)
    assert a["reference"] == "adapters disabled" and a["reward"] == "exact_match"
    ckpt = straight / "checkpoint-2"
    assert (ckpt / "adapter_config.json").is_file()
    cut.mkdir()
    shutil.copytree(ckpt, cut / ckpt.name)
    (cut / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in records(straight) if r.get("step", 0) <= 2))
    b = llm_run("--output_dir", str(cut), *args, "--resume")
    assert b["resumed_from"] == str(cut / ckpt.name)
    for key in ("loss", "reward", "kl", "completion_length"):
        la, lb = by_step(straight, key), by_step(cut, key)
        assert sorted(lb) == [1, 2, 3, 4], key
        assert lb == pytest.approx(la, abs=1e-6), key
    assert by_step(straight, "kl")[4] > 0  # the adapters moved away from the reference
    assert b["eval_reward_after"] == pytest.approx(a["eval_reward_after"], abs=1e-9)


def test_option_errors_name_the_options(prompts, tmp_path):
    train, _ = prompts
    with pytest.raises(ConfigError, match="--per_device_train_batch_size 6 counts completions: "
                                          "it must be a multiple of --num_generations 4"):
        llm_run("--data", train, *COMMON, "--per_device_train_batch_size", "6",
                "--reward", "exact_match", "--output_dir", str(tmp_path / "a"))
    with pytest.raises(ConfigError, match="the grpo stage needs a reward: --reward"):
        llm_run("--data", train, *COMMON, "--output_dir", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="--save_steps 3 must be a multiple of "
                                          "--num_iterations 2"):
        llm_run("--data", train, *COMMON, "--num_iterations", "2", "--save_steps", "3",
                "--reward", "exact_match", "--output_dir", str(tmp_path / "c"))


def test_prompts_cut_to_fit_max_length_are_counted_and_warned_about(prompts, tmp_path):
    train, held = prompts
    args = [a for a in COMMON]
    args[args.index("--max_length") + 1] = "20"  # 12 tokens of room: every rendered prompt is longer
    with pytest.warns(UserWarning, match=r"16 of 16 training and 6 of 6 held-out prompts are "
                                         r"longer than --max_length 20 minus "
                                         r"--max_completion_length 8 = 12 tokens"):
        llm_run("--data", train, "--eval_data", held, *args, "--max_steps", "1",
                "--reward", "exact_match", "--output_dir", str(tmp_path / "run"))
    start = next(r for r in records(tmp_path / "run") if r.get("step") == 0)
    assert start["train_prompts_truncated"] == 16 and start["eval_prompts_truncated"] == 6


def test_grpo_demo_runs_from_the_instruct_model_with_the_rule_reward(tmp_path):
    """The demo (no --data), shortened: exact_match on generated demo questions, from the
    bundled instruction-tuned model; held-out greedy exact match measured before and after,
    the rollout share of step time reported."""
    summary = llm_run("--align", "grpo", "--max_steps", "3", "--demo_eval_prompts", "20",
                      "--output_dir", str(tmp_path / "demo"))
    assert summary["demo"] and summary["stage"] == "grpo" and summary["reward"] == "exact_match"
    assert summary["model"] == str(INSTRUCT_DEMO_MODEL) and summary["steps"] == 3
    assert summary["exact_match_before"] > 0  # the instruct model answers some of them
    assert set(summary["by_task_before"]) == set(summary["demo_tasks"] or ("sort",))
    assert 0 < summary["rollout_share"] < 1
    first = [r for r in records(tmp_path / "demo") if "loss" in r][0]
    assert 0 <= first["reward"] <= 1 and first["completion_length"] > 0


def test_grpo_demo_raises_held_out_exact_match(tmp_path):
    """The demo's first half (50 of its 100 steps, constant learning rate: the same
    trajectory): greedy exact match on 200 held-out sort questions, never trained on, rises
    over the instruction-tuned starting model from the exact_match reward alone."""
    summary = llm_run("--align", "grpo", "--max_steps", "50", "--eval_steps", "100",
                      "--output_dir", str(tmp_path / "demo"))
    print({k: summary[k] for k in ("exact_match_before", "exact_match_after", "rollout_share")})
    assert summary["eval_prompts"] == 200 and summary["train_prompts"] == 2000
    assert summary["exact_match_after"] >= summary["exact_match_before"] + 0.05
    rewards = [r["reward"] for r in records(tmp_path / "demo") if "loss" in r]
    assert np.mean(rewards[-2:]) > 0  # the samples earn rewards to learn from


def test_grpo_with_the_http_reward_scores_every_rollout_on_the_server(prompts, tmp_path,
                                                                      server):
    """``--reward http`` through the stage: the server receives each step's rollouts (the
    training prompts, num_generations completions each) and the held-out greedy
    completions; the logged rewards and eval_reward are the means of what it answered."""
    train, held = prompts
    rule = lambda p, c: (len(c) % 5) * 0.5 + len(json.dumps(p)) * 0.01
    srv = server(lambda body: (200, json.dumps({"rewards": [
        rule(p, c) for p, c in zip(body["prompts"], body["completions"])]}).encode(), 0))
    out = tmp_path / "http"
    summary = llm_run("--data", train, "--eval_data", held, *COMMON, "--max_steps", "2",
                      "--reward", "http", "--reward_server_url", srv.url,
                      "--output_dir", str(out))
    assert summary["reward"] == "http"
    train_prompts = {json.loads(line)["prompt"] for line in open(train)}
    # the held-out file's messages form: the conversation before the answer is the prompt
    held_prompts = [m["messages"][:-1] for m in map(json.loads, open(held))]
    # eval before, step 1, step 2, eval after: one POST each
    assert len(srv.requests) == 4
    before, *steps, after = srv.requests
    for body in (before, after):
        assert body["prompts"] == held_prompts
        assert body["references"] == [m["messages"][1]["content"]
                                      for m in map(json.loads, open(held))]
    assert [s["completion"] for s in summary["samples_after"]] == after["completions"][:3]
    means = lambda body: np.mean([rule(p, c) for p, c in zip(body["prompts"],
                                                              body["completions"])])
    assert summary["eval_reward_before"] == pytest.approx(means(before))
    assert summary["eval_reward_after"] == pytest.approx(means(after))
    logged = by_step(out, "reward")
    for step, body in enumerate(steps, start=1):
        assert len(body["prompts"]) == 8 and set(body["prompts"]) <= train_prompts
        assert len(set(body["prompts"])) == 2  # 2 prompts x 4 completions
        assert all(isinstance(c, str) for c in body["completions"])
        assert logged[step] == pytest.approx(means(body), rel=1e-6)
