#!/usr/bin/env python3
"""Several LoRA adapters on one engine (``--lora_modules``) vs the base engine and an engine
with one adapter merged (``--lora_path``), on the random Llama checkpoint of the other
benchmarks (hidden 512, 8 layers, GQA 8/4, vocab 32000; adapters on every projection).

Cases, each ``--batch`` requests of ``--prompt`` random tokens decoded greedily to
``--max_tokens`` (prefill included):

* ``base engine``: no adapters loaded;
* ``merged``: adapter 1 folded into the weights (what ``--lora_path`` serves, at base speed);
* ``multi, base rows``: the multi-adapter engine, every request on the base;
* ``multi, one adapter``: every request on adapter 1 (the single-adapter short cut);
* ``multi, mixed``: the requests spread over the base and every adapter (one batch).

Rounds are interleaved so every case sees the same machine load; the table gives the median
and the best round, and the ratio of each case's median to the base engine's.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/multi_lora_bench.py [--adapters 3 --rank 16]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_common import add_model_args, make_checkpoint  # noqa: E402


def make_adapters(base: str, out: Path, count: int, rank: int) -> list[tuple[str, str]]:
    import paddle

    from paddlellm import AutoModelForCausalLM
    from paddlellm.modeling import peft

    adapters = []
    for k in range(count):
        model = peft.apply_peft(AutoModelForCausalLM.from_pretrained(base), "lora",
                                {"lora_rank": rank})
        rng = np.random.default_rng(k)
        for name, p in model.named_parameters():
            if "lora_B" in name:  # trained-like: non-zero B
                p.set_value(paddle.to_tensor(rng.normal(0, 0.02, p.shape).astype("float32")))
        peft.save_adapter(model, out / f"lora{k + 1}")
        adapters.append((f"lora{k + 1}", str(out / f"lora{k + 1}")))
    return adapters


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--max_tokens", type=int, default=64)
    p.add_argument("--adapters", type=int, default=3)
    p.add_argument("--rank", type=int, default=16)
    args = p.parse_args()

    from paddlellm.engine import LLMEngine, SamplingParams

    with tempfile.TemporaryDirectory() as tmp:
        base = str(Path(tmp) / "base")
        make_checkpoint(base, args, max_position_embeddings=1024)
        adapters = make_adapters(base, Path(tmp), args.adapters, args.rank)
        engines = {"base": LLMEngine.from_pretrained(base),
                   "merged": LLMEngine.from_pretrained(base, lora_path=adapters[0][1]),
                   "multi": LLMEngine.from_pretrained(base, lora_modules=adapters)}
        rng = np.random.default_rng(0)
        prompts = [rng.integers(3, args.vocab, args.prompt).tolist() for _ in range(args.batch)]
        names = [None] + [n for n, _ in adapters]
        mixed = [names[i % len(names)] for i in range(args.batch)]
        cases = [("base engine", "base", None), ("merged (--lora_path)", "merged", None),
                 ("multi, base rows", "multi", None),
                 ("multi, one adapter", "multi", adapters[0][0]),
                 (f"multi, mixed ({len(names)} ways)", "multi", mixed)]
        params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
        for _, engine, adapter in cases:  # warm-up
            engines[engine].generate(prompts[:1], SamplingParams(max_tokens=2), adapter=(
                adapter[:1] if isinstance(adapter, list) else adapter))
        times: dict[str, list[float]] = {label: [] for label, _, _ in cases}
        for _ in range(args.rounds):
            for label, engine, adapter in cases:
                t0 = time.perf_counter()
                engines[engine].generate(prompts, params, adapter=adapter)
                times[label].append(time.perf_counter() - t0)
    tokens = args.batch * args.max_tokens
    ref = statistics.median(times["base engine"])
    print(f"batch {args.batch} x ({args.prompt} prompt + {args.max_tokens} generated) tokens, "
          f"{args.adapters} adapters of rank {args.rank}, {args.rounds} rounds")
    print(f"| case | tokens/s (median) | best round | vs base engine |\n|---|---|---|---|")
    for label, _, _ in cases:
        med = statistics.median(times[label])
        print(f"| {label} | {tokens / med:.0f} | {tokens / min(times[label]):.0f} | "
              f"{ref / med:.2f}x |")


if __name__ == "__main__":
    main()
