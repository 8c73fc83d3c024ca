"""Multi-process strategies against one process, under ``paddle.distributed.launch`` (CPU, gloo).

Each test launches ``dist_worker.py`` in two processes and compares with the same worker run
in one process with ``--strategy single``: 2 processes × batch b must equal 1 process ×
batch 2b (data parallel), and split projections must equal the unsplit model (tensor parallel).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("dist_worker.py")
TIMEOUT = 180


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PADDLE_", "FLAGS_selected", "PADDLE_TRAINER"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def launch(args: list[str], tmp_path: Path, nproc: int = 2, name: str = "log") -> subprocess.CompletedProcess:
    """``python -m paddle.distributed.launch --nproc_per_node N ARGS``; fails with the logs."""
    log_dir = tmp_path / name
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", str(nproc),
           "--max_restart", "0", "--log_dir", str(log_dir), *args]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.glob("workerlog.*")))
        pytest.fail(f"launch failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}")
    return proc


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("single")
    subprocess.run([sys.executable, str(WORKER), "single", str(out)], env=_env(), check=True,
                   capture_output=True, timeout=TIMEOUT)
    return dict(np.load(out / "single.npz"))


def _weights(result: dict, prefix: str) -> dict[str, np.ndarray]:
    return {k: v for k, v in result.items() if k.startswith(prefix + "/")}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float(np.abs(a[k] - b[k]).max()) for k in a)


def test_data_parallel_two_processes_batch_b_equal_one_process_batch_2b(single, tmp_path):
    launch([str(WORKER), "data_parallel", str(tmp_path)], tmp_path)
    dp = dict(np.load(tmp_path / "data_parallel.npz"))
    assert list(dp["names"]) == list(single["names"])  # no DataParallel "_layers." prefix
    # SGD is linear in the gradient: averaged gradients of b + b == gradient of 2b
    np.testing.assert_allclose(dp["sgd_losses"], single["sgd_losses"], atol=1e-5)
    assert _max_diff(_weights(dp, "sgd"), _weights(single, "sgd")) < 1e-5
    # ... and the weights did move (the comparison is not trivially true)
    assert _max_diff(_weights(single, "sgd"), {k.replace("init", "sgd"): v for k, v in
                                               _weights(single, "init").items()}) > 1e-2
    # AdamW divides by sqrt(v): rounding of tiny gradients is amplified, so compare loosely
    np.testing.assert_allclose(dp["adamw_losses"], single["adamw_losses"], atol=1e-4)
    assert _max_diff(_weights(dp, "adamw"), _weights(single, "adamw")) < 1e-3


def test_tensor_parallel_two_processes_equal_one_process(single, tmp_path):
    launch([str(WORKER), "tensor_parallel", str(tmp_path)], tmp_path)
    tp = dict(np.load(tmp_path / "tensor_parallel.npz"))
    np.testing.assert_allclose(tp["logits"], single["logits"], atol=1e-5)
    np.testing.assert_allclose(tp["sgd_losses"], single["sgd_losses"], atol=1e-5)
    assert _max_diff(_weights(tp, "sgd"), _weights(single, "sgd")) < 1e-5
    np.testing.assert_allclose(tp["adamw_losses"], single["adamw_losses"], atol=1e-4)
    assert _max_diff(_weights(tp, "adamw"), _weights(single, "adamw")) < 1e-3

    assert tp["save_refused"][0] == 1 and not (tmp_path / "refused").exists()
    # the collective save wrote the full (unsplit) weights: they load as a plain model
    from paddlellm.api import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    state = {f"init/{k}": np.asarray(v.numpy()) for k, v in loaded.state_dict().items()}
    init = _weights(single, "init")
    assert _max_diff({k: state[k] for k in init}, init) == 0.0


def test_tensor_parallel_times_data_parallel_on_four_processes_equal_one_process(single, tmp_path):
    """A (dp=2, mp=2) mesh: two replicas, each split over two processes."""
    launch([str(WORKER), "tensor_parallel", str(tmp_path), "2"], tmp_path, nproc=4)
    tp = dict(np.load(tmp_path / "tensor_parallel.npz"))
    np.testing.assert_allclose(tp["logits"], single["logits"], atol=1e-5)
    np.testing.assert_allclose(tp["sgd_losses"], single["sgd_losses"], atol=1e-5)
    assert _max_diff(_weights(tp, "sgd"), _weights(single, "sgd")) < 1e-5
    np.testing.assert_allclose(tp["adamw_losses"], single["adamw_losses"], atol=1e-4)
    assert _max_diff(_weights(tp, "adamw"), _weights(single, "adamw")) < 1e-3


def test_llm_run_data_parallel_end_to_end_under_llm_launch(tmp_path):
    out = tmp_path / "out"
    llm = Path(sys.executable).with_name("llm")
    cmd = [str(llm), "launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"), "--",
           "run", "--stage", "pretrain", "--strategy", "data_parallel", "--max_steps", "3",
           "--max_length", "32",
           "--output_dir", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}"
    import json

    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["steps"] == 3 and summary["eval_loss_after"] < summary["eval_loss_before"]
    assert (out / "model.safetensors").is_file()
    # one metrics writer (process 0): the step-0 evaluation is logged once, not per process
    steps = [json.loads(line).get("step") for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(0) == 1 and 3 in steps
    # the weights are those of an unwrapped model (no DataParallel '_layers.' prefix)
    from safetensors.numpy import load_file

    assert not any(k.startswith("_layers") for k in load_file(str(out / "model.safetensors")))


def test_llm_run_tensor_parallel_saves_a_checkpoint_transformers_loads(tmp_path):
    """Two tensor-parallel processes train, gather and save one Hugging Face checkpoint."""
    out = tmp_path / "out"
    llm = Path(sys.executable).with_name("llm")
    cmd = [str(llm), "launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"), "--",
           "run", "--stage", "pretrain", "--strategy", "tensor_parallel", "--max_steps", "2",
           "--save_steps", "1", "--max_length", "32", "--output_dir", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT,
                          cwd=tmp_path)
    logs = "\n".join(p.read_text()[-3000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert proc.returncode == 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}\n{logs}"
    assert "no intermediate checkpoints" in logs
    import paddle

    from paddlellm.api import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out)
    ids = [[1, 5, 9, 13, 2, 7]]
    with paddle.no_grad():
        ours = model(paddle.to_tensor(ids)).numpy()
    assert np.isfinite(ours).all()
    dev = os.environ.get("PADDLELLM_DEV_PYTHON")
    if not dev or not Path(dev).exists():
        pytest.skip("transformers check: set PADDLELLM_DEV_PYTHON (make test builds .venv-oracle)")
    script = ("import sys, json, torch, transformers\n"
              "m = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1]).eval()\n"
              "with torch.no_grad():\n"
              "    print(json.dumps(m(torch.tensor(json.loads(sys.argv[2]))).logits.tolist()))\n")
    ref = subprocess.run([dev, "-c", script, str(out), "[[1, 5, 9, 13, 2, 7]]"], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                      "TRANSFORMERS_VERBOSITY": "error"})
    assert ref.returncode == 0, ref.stderr[-3000:]
    theirs = np.array(json.loads(ref.stdout.strip().splitlines()[-1]))
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=1e-4)
