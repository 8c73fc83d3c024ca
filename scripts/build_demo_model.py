#!/usr/bin/env python3
"""Rebuild the bundled demo model (core/paddlellm/assets/qwen-demo) with paddlellm itself.

It pretrains a small Qwen2-architecture model from scratch on the generated demo corpus
(`llm run --stage pretrain`, which also trains its byte-level BPE tokenizer) and copies the
final checkpoint and tokenizer into the package. Deterministic for a given seed and thread
count. Takes a few minutes on 2 CPU cores:

    .venv/bin/python scripts/build_demo_model.py [--steps 400]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "core" / "paddlellm" / "assets" / "qwen-demo"
KEEP = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "paddlellm", "run", "--model", "qwen", "--stage", "pretrain",
               "--output_dir", tmp, "--max_steps", str(args.steps), "--max_length", "128",
               "--per_device_train_batch_size", "16", "--learning_rate", "3e-3",
               "--warmup_steps", "20", "--lr_scheduler_type", "cosine", "--logging_steps", "25",
               "--save_steps", str(args.steps + 1), "--seed", str(args.seed)]
        print(" ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        summary = json.loads((Path(tmp) / "run_summary.json").read_text())
        summary["output_dir"] = str(TARGET.relative_to(ROOT))
        recorded = ["<tmp>" if c == tmp else c for c in cmd[1:]]
        shutil.rmtree(TARGET, ignore_errors=True)
        TARGET.mkdir(parents=True)
        for name in KEEP:
            if (Path(tmp) / name).is_file():
                shutil.copy2(Path(tmp) / name, TARGET / name)
    (TARGET / "BUILD.json").write_text(json.dumps({"command": recorded, "summary": summary},
                                                  indent=2, default=str))
    size = sum(p.stat().st_size for p in TARGET.iterdir()) / 1e6
    print(f"demo model written to {TARGET} ({size:.1f} MB); held-out perplexity "
          f"{summary['eval_ppl_before']:.1f} -> {summary['eval_ppl_after']:.2f}")


if __name__ == "__main__":
    main()
