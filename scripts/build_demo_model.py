#!/usr/bin/env python3
"""Rebuild the bundled demo models (core/paddlellm/assets/) with paddlellm itself.

``qwen-demo`` (the default, the base the demos fine-tune): a small Qwen2-architecture model
pretrained from scratch on the generated demo corpus (`llm run --stage pretrain`, which also
trains its byte-level BPE tokenizer). ``--instruct`` builds ``qwen-demo-instruct`` (the
default of `llm chat`, `llm serve` and `llm predict`): ``qwen-demo`` fine-tuned on the
generated demo instructions (`llm run --stage sft`, all parameters, the SFT demo's settings).
The final checkpoint and tokenizer are copied into the package with a BUILD.json recording
the command and its summary. Deterministic for a given seed and thread count (recorded).
Each takes a few minutes on 2 CPU cores; the bundled ones were built with:

    .venv/bin/python scripts/build_demo_model.py [--steps 1200]
    OMP_NUM_THREADS=1 .venv/bin/python scripts/build_demo_model.py --instruct [--steps 750]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "core" / "paddlellm" / "assets"
KEEP = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def pretrain_command(out: str, steps: int, seed: int) -> list[str]:
    return ["--model", "qwen", "--stage", "pretrain", "--output_dir", out,
            "--max_steps", str(steps), "--max_length", "128",
            "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
            "--warmup_steps", "20", "--lr_scheduler_type", "cosine", "--logging_steps", "25",
            "--save_steps", str(steps + 1), "--seed", str(seed)]


def instruct_command(out: str, steps: int, seed: int) -> list[str]:
    # the SFT demo (`llm run --model qwen --stage sft`): learning rate 2e-3, cosine, warmup
    # 20, max_length 128, batch 8 on 3000 generated instructions (750 steps = 2 epochs)
    return ["--model", "qwen", "--stage", "sft", "--model_name_or_path",
            str((ASSETS / "qwen-demo").relative_to(ROOT)), "--output_dir", out,
            "--max_steps", str(steps), "--logging_steps", "50", "--save_steps",
            str(steps + 1), "--seed", str(seed)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instruct", action="store_true",
                        help="build qwen-demo-instruct (SFT of qwen-demo) instead of qwen-demo")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default 1200 pretraining, 750 SFT)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    target = ASSETS / ("qwen-demo-instruct" if args.instruct else "qwen-demo")
    steps = args.steps or (750 if args.instruct else 1200)
    make = instruct_command if args.instruct else pretrain_command
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "paddlellm", "run", *make(tmp, steps, args.seed)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
        summary = json.loads((Path(tmp) / "run_summary.json").read_text())
        summary["output_dir"] = str(target.relative_to(ROOT))
        summary.pop("samples_after", None)
        if "model" in summary:
            summary["model"] = str(Path(summary["model"]))
        recorded = ["<tmp>" if c == tmp else c for c in cmd[1:]]
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for name in KEEP:
            if (Path(tmp) / name).is_file():
                shutil.copy2(Path(tmp) / name, target / name)
    # the CPU backend's thread count (PADDLELLM_NUM_THREADS, else the usable CPUs) and
    # OMP_NUM_THREADS (MKL's threads): results are reproducible for equal settings
    threads = {"backend_threads": int(os.environ.get("PADDLELLM_NUM_THREADS")
                                      or len(os.sched_getaffinity(0))),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    (target / "BUILD.json").write_text(json.dumps(
        {"command": recorded, "threads": threads, "summary": summary}, indent=2, default=str))
    size = sum(p.stat().st_size for p in target.iterdir()) / 1e6
    if args.instruct:
        print(f"instruct demo model written to {target} ({size:.1f} MB); held-out exact match "
              f"{summary['exact_match_before']:.2f} -> {summary['exact_match_after']:.2f}")
    else:
        print(f"demo model written to {target} ({size:.1f} MB); held-out perplexity "
              f"{summary['eval_ppl_before']:.1f} -> {summary['eval_ppl_after']:.2f}")


if __name__ == "__main__":
    main()
