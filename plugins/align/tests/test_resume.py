"""An interrupted ``llm run --align`` resumes from its checkpoint and reproduces the
uninterrupted run: the same losses and evaluations at every step, for full-parameter runs (the
reference stays the starting model, not the checkpoint's weights) and ``--peft lora``."""
from __future__ import annotations

import json
import shutil

import pytest

from paddlellm.errors import ConfigError
from paddlellm_align.demo import demo_preferences
from align_testutil import by_step, llm_run, records

STEPS, CUT = 4, 2
COMMON = ("--align", "dpo", "--max_steps", str(STEPS), "--save_steps", str(CUT),
          "--logging_steps", "1", "--eval_steps", "2", "--per_device_train_batch_size", "4",
          "--per_device_eval_batch_size", "8", "--learning_rate", "2e-3", "--warmup_steps", "1",
          "--max_length", "64", "--beta", "0.5")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Eight short-answer pairs: two batches of four, so the resumed run must skip the
    batches of the steps already done."""
    rows = [r for r in demo_preferences(60, seed=7) if r["task"] in ("count", "next", "fact")]
    path = tmp_path_factory.mktemp("pref") / "pairs.jsonl"
    path.write_text("".join(json.dumps({k: r[k] for k in ("src", "tgt", "response", "sort")})
                            + "\n" for r in rows[:8]))
    return str(path)


@pytest.mark.parametrize("extra, how", [
    ((), "--resume"),  # full parameters, frozen reference copy
    (("--precompute_ref_logps",), "--resume"),  # full parameters, reference values precomputed
    (("--peft", "lora", "--lora_rank", "4"), "--resume_from_checkpoint"),
])
def test_interrupted_align_run_resumes_to_the_same_losses(pairs, tmp_path, extra, how):
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    args = ("--data", pairs, "--eval_data", pairs, *COMMON, *extra)
    a = llm_run("--output_dir", str(straight), *args)
    ckpt = straight / f"checkpoint-{CUT}"
    assert (ckpt / "trainer_state.json").is_file()
    assert (ckpt / ("adapter_config.json" if extra and extra[0] == "--peft"
                    else "model.safetensors")).is_file()
    # "interrupted" after step CUT: only its checkpoint and the metrics up to it remain
    cut.mkdir()
    shutil.copytree(ckpt, cut / ckpt.name)
    (cut / "metrics.jsonl").write_text("".join(
        json.dumps(r) + "\n" for r in records(straight) if r.get("step", 0) <= CUT))
    resume = ("--resume",) if how == "--resume" else (how, str(cut / ckpt.name))
    b = llm_run("--output_dir", str(cut), *args, *resume)

    assert b["resumed_from"] == str(cut / ckpt.name) and a["resumed_from"] is None
    assert b["steps"] == STEPS and b["reference"] == a["reference"]
    la, lb = by_step(straight, "loss"), by_step(cut, "loss")
    assert sorted(lb) == list(range(1, STEPS + 1))  # no step missing or logged twice
    assert lb == pytest.approx(la, abs=1e-6)
    assert la[STEPS] != pytest.approx(la[1], abs=1e-3)  # it trained: the losses move
    for key in ("rewards/margins", "rewards/chosen"):  # rewards use the reference values
        assert by_step(cut, key) == pytest.approx(by_step(straight, key), abs=1e-6), key
    assert by_step(cut, "eval_loss") == pytest.approx(by_step(straight, "eval_loss"), abs=1e-6)
    assert b["eval_loss_before"] == a["eval_loss_before"]
    assert b["eval_loss_after"] == pytest.approx(a["eval_loss_after"], abs=1e-6)


def test_resuming_the_demo_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="align demo .*does not resume"):
        llm_run("--align", "dpo", "--output_dir", str(tmp_path / "demo"), "--resume")
