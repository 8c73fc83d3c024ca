"""The benchmark scripts users and the README run stay runnable: each one's paddlellm path on a
tiny model (the peers are dev-only and skipped here; no figure is asserted, only that every
metric is measured and the report says why a peer did not run)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--hidden", "64", "--layers", "2", "--heads", "4", "--kv_heads", "2", "--vocab", "512"]


def _run(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_peer_bench_measures_every_paddlellm_metric_and_reports_skipped_peers(tmp_path):
    out = tmp_path / "peer.json"
    proc = _run("peer_bench.py", *TINY, "--max_new_tokens", "4", "--requests", "3",
                "--long_context", "64", "--rounds", "1", "--threads", "1",
                "--peers", "paddlellm", "--json", str(out))
    report = json.loads(out.read_text())
    ours = report["peers"]["paddlellm"]
    assert ours["status"] == "ok"
    assert set(ours["median"]) == {"decode_b1", "decode_b8", "requests_32x64", "prefill_512_ms",
                                   "decode_b8_ctx1024"}
    assert all(v > 0 for v in ours["median"].values())
    for bits in (8, 4):  # our weight-only engines: decode only
        quantized = report["peers"][f"paddlellm int{bits}"]
        assert quantized["status"] == "ok" and set(quantized["median"]) == {"decode_b1", "decode_b8"}
    for peer in ("transformers", "llama.cpp f32", "vLLM"):
        assert report["peers"][peer]["status"] == "skipped (not in --peers)"
    assert "| decode b1, tok/s |" in proc.stdout and "skipped (not in --peers)" in proc.stdout


def test_infer_bench_runs_the_engine_with_and_without_the_kernels(tmp_path):
    out = tmp_path / "infer.json"
    _run("infer_bench.py", *TINY, "--prompt_len", "8", "--max_new_tokens", "4", "--requests", "2",
         "--rounds", "1", "--threads", "1", "--skip_transformers", "--cpu_kernels", "compare",
         "--quant_types", "float32,weight_only_int8", "--json", str(out))
    assert out.read_text().strip()
