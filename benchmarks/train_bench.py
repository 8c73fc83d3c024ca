#!/usr/bin/env python3
"""Training-step throughput: paddlellm vs transformers on the same config and weights.

One run builds a random Llama-architecture checkpoint, then times a full training step
(forward + backward + AdamW) in both frameworks, interleaving rounds so both see the same
machine load, and reports tokens/s and the ratio (median of rounds).

    .venv/bin/python benchmarks/train_bench.py [--hidden 512 --layers 8 --batch 4 --seq 512]

The transformers side runs in a separate interpreter with torch installed (dev-only; default
the repository's .venv-bench or .venv-oracle, or --torch-python / $PADDLELLM_DEV_PYTHON).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap

from bench_common import add_model_args, add_run_args, make_checkpoint, run_worker

PADDLE_WORKER = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np
    from paddlellm_backend_cpu.backend import backend
    backend.setup()
    import paddle
    from paddlellm import AutoModelForCausalLM
    from paddlellm.training.loss import causal_lm_loss
    path, batch, seq, warmup, steps = sys.argv[1], *map(int, sys.argv[2:6])
    model = AutoModelForCausalLM.from_pretrained(path)
    model.train()
    opt = paddle.optimizer.AdamW(1e-4, parameters=model.parameters())
    rng = np.random.default_rng(0)
    ids = paddle.to_tensor(rng.integers(0, model.config.vocab_size, (batch, seq)))
    def step():
        loss, _ = causal_lm_loss(model(ids), ids)
        loss.backward(); opt.step(); opt.clear_grad()
        return float(loss)
    for _ in range(warmup): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    dt = time.perf_counter() - t
    print(json.dumps({"tokens_per_sec": batch * seq * steps / dt}))
""")

TORCH_WORKER = textwrap.dedent("""
    import json, sys, time
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(int(sys.argv[6]))
    path, batch, seq, warmup, steps = sys.argv[1], *map(int, sys.argv[2:6])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (batch, seq), generator=g)
    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(); opt.step(); opt.zero_grad()
        return float(loss)
    for _ in range(warmup): step()
    t = time.perf_counter()
    for _ in range(steps): step()
    dt = time.perf_counter() - t
    print(json.dumps({"tokens_per_sec": batch * seq * steps / dt}))
""")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    add_run_args(p)
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    shape = [str(v) for v in (args.batch, args.seq, args.warmup, args.steps)]
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, args, max_position_embeddings=max(args.seq, 128))
        results: dict[str, list[float]] = {"paddlellm": [], "transformers": []}
        for r in range(args.rounds):
            results["paddlellm"].append(
                run_worker([sys.executable, "-c", PADDLE_WORKER, tmp, *shape], env)["tokens_per_sec"])
            results["transformers"].append(run_worker(
                [args.torch_python, "-c", TORCH_WORKER, tmp, *shape, str(args.threads)],
                env)["tokens_per_sec"])
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} tok/s" for k, v in results.items()),
                  flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print(json.dumps({"config": vars(args), "median_tokens_per_sec": med,
                      "ratio_paddlellm_over_transformers": med["paddlellm"] / med["transformers"]},
                     indent=2))


if __name__ == "__main__":
    main()
