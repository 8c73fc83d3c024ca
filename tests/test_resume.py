"""A run killed with SIGKILL resumes from its last checkpoint and reproduces the
uninterrupted run's loss trajectory exactly."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from helpers import run_cli

ARGS = ["--stage", "pretrain", "--max_steps", "16", "--save_steps", "4", "--logging_steps", "1", "--max_length", "64",
        "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "2"]


def _losses(out):
    records = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_sigkilled_run_resumes_to_the_same_trajectory(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli("run", "--output_dir", str(straight), *ARGS, check=True)

    proc = subprocess.Popen([sys.executable, "-m", "paddlellm", "run", "--output_dir",
                             str(killed), *ARGS], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-4").exists():
        assert proc.poll() is None and time.time() < deadline, "run ended before checkpoint-4"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "run_summary.json").exists(), "the run finished before it was killed"
    done_before_kill = max(_losses(killed))
    assert done_before_kill < 16

    resumed = run_cli("run", "--output_dir", str(killed), "--resume", *ARGS, check=True)
    assert resumed.returncode == 0
    a, b = _losses(straight), _losses(killed)
    assert sorted(b) == list(range(1, 17))  # no step missing or logged twice
    assert a == b  # bit-for-bit the same trajectory
    sa = json.loads((straight / "run_summary.json").read_text())
    sb = json.loads((killed / "run_summary.json").read_text())
    assert sa["eval_loss_after"] == sb["eval_loss_after"]
    assert sa["eval_loss_before"] == sb["eval_loss_before"]


def test_resume_from_a_folder_that_is_not_a_checkpoint_is_an_error(tmp_path):
    proc = run_cli("run", "--output_dir", str(tmp_path / "o"), "--resume_from_checkpoint",
                   str(tmp_path), "--max_steps", "1")
    assert proc.returncode == 2 and "not a checkpoint folder" in proc.stderr
