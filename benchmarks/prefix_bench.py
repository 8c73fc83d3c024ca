#!/usr/bin/env python3
"""Prefix caching: time to first token of requests that share a 512-token system prompt,
with and without ``enable_prefix_caching``, on the engine.

The model is the random Llama-architecture model of ``peer_bench.py`` (hidden 512, 8 layers,
GQA 8/4, vocab 32000, fp32; built in memory, not saved). Each round builds one engine per
mode (``off``, ``on``; interleaved so both see the same machine load) and sends ``--requests``
requests one after another: the shared system prompt plus a distinct ``--suffix``-token user
part, each decoded greedily for ``--max_tokens`` tokens. Time to first token is measured from
``add_request`` to the step that returns the request's first token. With caching the first
request is cold (nothing cached yet); the later ones reuse the system prompt's blocks. The
outputs of both modes are checked to be identical.

Reports the median TTFT of the first request and of the later ones per mode, their ratio,
the prompt tokens the cache served, and the share of the CPUs other processes used while
each mode ran (from /proc/stat minus this process's own CPU time). Dev-only.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/prefix_bench.py [--rounds 3 --requests 6]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from bench_common import add_model_args


def _busy_seconds() -> float:
    """CPU seconds all processes spent busy so far (all but idle and iowait)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--requests", type=int, default=6, help="requests per round and mode")
    p.add_argument("--system", type=int, default=512, help="tokens of the shared system prompt")
    p.add_argument("--suffix", type=int, default=32, help="tokens of each request's own part")
    p.add_argument("--max_tokens", type=int, default=8)
    p.add_argument("--block_size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    from paddlellm import AutoModelForCausalLM
    from paddlellm.plugin.device import setup_device
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.plugin.manager import get_plugin_manager

    setup_device(args.device, get_plugin_manager())
    context = args.system + args.suffix + args.max_tokens + 8
    model = AutoModelForCausalLM.from_config(
        "llama-tiny", hidden_size=args.hidden, intermediate_size=args.hidden * 11 // 4,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
        max_position_embeddings=max(2048, context))
    rng = np.random.default_rng(0)
    system = rng.integers(0, args.vocab, args.system).tolist()
    prompts = [system + rng.integers(0, args.vocab, args.suffix).tolist()
               for _ in range(args.requests)]
    warm = rng.integers(0, args.vocab, 64).tolist()
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0, ignore_eos=True)
    ttft = {"off": ([], []), "on": ([], [])}  # (first request, later requests) per mode
    shares = {"off": [], "on": []}
    outputs, hits = {}, {}

    for _ in range(args.rounds):
        for mode in ("off", "on"):
            engine = LLMEngine(model, None, block_size=args.block_size, max_model_len=context,
                               enable_prefix_caching=mode == "on")
            engine.generate([warm], SamplingParams(max_tokens=2, temperature=0))  # warm-up
            before = engine.stats()
            b0, c0, t0 = _busy_seconds(), sum(os.times()[:2]), time.perf_counter()
            outs = []
            for i, prompt in enumerate(prompts):
                engine.add_request("q", prompt, params)
                start, first, tokens = time.perf_counter(), None, []
                while engine.has_unfinished_requests():
                    for out in engine.step():
                        if first is None and out.new_token_ids:
                            first = time.perf_counter() - start
                        tokens += out.new_token_ids
                ttft[mode][0 if i == 0 else 1].append(first)
                outs.append(tokens)
            b1, c1, t1 = _busy_seconds(), sum(os.times()[:2]), time.perf_counter()
            shares[mode].append(max(0.0, (b1 - b0) - (c1 - c0)) / (os.cpu_count() * (t1 - t0)))
            if outputs.setdefault(mode, outs) != outs:
                raise SystemExit(f"{mode}: outputs differ between rounds")
            stats = engine.stats()
            hits[mode] = tuple(stats[k] - before[k] for k in ("prefix_cache_hits",
                                                              "prefix_cache_queries"))
    if outputs["off"] != outputs["on"]:
        raise SystemExit("outputs differ with and without prefix caching")

    med = {m: tuple(statistics.median(v) * 1e3 for v in ttft[m]) for m in ttft}
    print(f"model hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; system prompt "
          f"{args.system} tokens + {args.suffix} own tokens; {args.requests} sequential requests "
          f"x {args.max_tokens} tokens; block {args.block_size}; {os.environ.get('OMP_NUM_THREADS', 'default')} "
          f"threads; median of {args.rounds} rounds; outputs identical")
    print()
    print("| prefix caching | TTFT first request, ms | TTFT later requests, ms | prompt tokens from cache | other processes' CPU share |")
    print("|---|---|---|---|---|")
    for mode in ("off", "on"):
        h, q = hits[mode]
        served = f"{h} / {q} ({h / q:.0%})" if q else "-"
        print(f"| {mode} | {med[mode][0]:.1f} | {med[mode][1]:.1f} | {served} | "
              f"{statistics.median(shares[mode]):.0%} |")
    print()
    print(f"later requests: TTFT {med['off'][1] / med['on'][1]:.2f}x lower with prefix caching")


if __name__ == "__main__":
    main()
