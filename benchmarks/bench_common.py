"""Pieces shared by the side-by-side benchmarks (run as ``python benchmarks/NAME.py``, so this
module is importable as a sibling): the random Llama-architecture checkpoint both sides load,
its command-line options, and running one worker process."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Shape of the random model, rounds, threads and the interpreter that has transformers."""
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv_heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=32000)


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--torch-python", default=default_torch_python(),
                   help="a Python with torch + transformers (default: $PADDLELLM_DEV_PYTHON, "
                        "else the repository's .venv-bench or .venv-oracle)")


def default_torch_python() -> str:
    """The dev-only environment with torch and transformers that the repository builds
    (``scripts/bench_env.sh``: .venv-bench; ``scripts/oracle_env.sh``: .venv-oracle)."""
    if os.environ.get("PADDLELLM_DEV_PYTHON"):
        return os.environ["PADDLELLM_DEV_PYTHON"]
    root = Path(__file__).resolve().parents[1]
    for venv in (".venv-bench", ".venv-oracle"):
        if (root / venv / "bin" / "python").exists():
            return str(root / venv / "bin" / "python")
    return str(root / ".venv-bench" / "bin" / "python")


def make_checkpoint(directory: str, args, max_position_embeddings: int) -> None:
    """A random float32 Llama of ``args``' shape, saved in the Hugging Face layout."""
    from paddlellm import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(
        "llama-tiny", hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
        max_position_embeddings=max_position_embeddings)
    model.save_pretrained(directory)


def run_worker(cmd: list[str], env: dict) -> dict:
    """Run one worker; its last stdout line is a JSON object."""
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {' '.join(cmd[:2])}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
