#!/usr/bin/env python3
"""Inference: the paddlellm engine vs transformers.generate on the same weights and prompts.

One run builds a random Llama-architecture checkpoint (default ~61M parameters: hidden 512,
8 layers, GQA 8/4, vocab 32000, fp32), then, interleaving rounds so both frameworks see the
same machine load, measures

* decode tokens/s at batch 1 and batch 8 (prefill excluded; greedy, forced to N tokens),
* throughput (output tokens/s, wall clock including prefill) of 32 concurrent requests of
  different prompt lengths on the engine vs the same 32 requests run one after another
  with transformers.generate,

and reports the medians, the ratios and the batch-1 memory-bandwidth floor: the bytes of
weights read per decoded token (every weight but the embedding table) / the measured
memory bandwidth (NumPy reductions on as many threads as the frameworks use).

    .venv/bin/python benchmarks/infer_bench.py [--rounds 3 --max_new_tokens 64 --threads 2]

The transformers side runs in an interpreter with torch (dev-only; default
/work/devenv/bin/python, or --torch-python / $PADDLELLM_DEV_PYTHON).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import struct
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from bench_common import add_model_args, add_run_args, make_checkpoint, run_worker

PADDLE_WORKER = textwrap.dedent("""
    import json, sys, time
    from paddlellm.engine import LLMEngine, SamplingParams
    path, prompts_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    prompts = json.load(open(prompts_file))
    engine = LLMEngine.from_pretrained(path, max_num_seqs=64, max_model_len=256, device="cpu")
    greedy = lambda k: SamplingParams(max_tokens=k, temperature=0, ignore_eos=True)

    def decode_rate(batch):
        for i, p in enumerate(batch):
            engine.add_request(f"d{len(batch)}-{i}", p, greedy(n))
        engine.step()  # prefill + first token
        t = time.perf_counter()
        tokens = {}
        while engine.has_unfinished_requests():
            for o in engine.step():
                tokens.setdefault(o.request_id, []).extend(o.new_token_ids)
        return len(batch) * (n - 1) / (time.perf_counter() - t), tokens

    engine.generate([prompts["fixed"][0]], greedy(4))  # warm-up
    b1, toks = decode_rate(prompts["fixed"][:1])
    b8, _ = decode_rate(prompts["fixed"][:8])
    t = time.perf_counter()
    res = engine.generate(prompts["ragged"], greedy(n))
    dt = time.perf_counter() - t
    out = sum(len(r["token_ids"]) for r in res)
    print(json.dumps({"decode_b1": b1, "decode_b8": b8, "throughput_concurrent": out / dt,
                      "b1_tokens": list(toks.values())[0][: n - 1]}))
""")

TORCH_WORKER = textwrap.dedent("""
    import json, sys, time
    import torch
    from transformers import AutoModelForCausalLM
    path, prompts_file, n, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    prompts = json.load(open(prompts_file))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def gen(batch, k):
        ids = torch.tensor(batch)
        with torch.no_grad():
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=k, min_new_tokens=k, pad_token_id=0)
            return time.perf_counter() - t, out[:, ids.shape[1]:]

    def decode_rate(batch):
        prefill = min(gen(batch, 1)[0] for _ in range(2))
        full, out = gen(batch, n)
        return len(batch) * (n - 1) / (full - prefill), out

    gen(prompts["fixed"][:1], 4)  # warm-up
    b1, toks = decode_rate(prompts["fixed"][:1])
    b8, _ = decode_rate(prompts["fixed"][:8])
    t = time.perf_counter()
    out = sum(gen([p], n)[1].shape[1] for p in prompts["ragged"])
    dt = time.perf_counter() - t
    print(json.dumps({"decode_b1": b1, "decode_b8": b8, "throughput_concurrent": out / dt,
                      "b1_tokens": toks[0, 1:].tolist()}))
""")


def weight_bytes_per_token(directory: str) -> tuple[int, int]:
    """(bytes read per decoded token, total bytes) from the safetensors header."""
    read = total = 0
    for f in Path(directory).glob("*.safetensors"):
        with open(f, "rb") as fh:
            header = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            size = info["data_offsets"][1] - info["data_offsets"][0]
            total += size
            if "embed_tokens" not in name:  # an embedding lookup reads one row
                read += size
    return read, total


def memory_bandwidth(threads: int, mb: int = 512) -> float:
    """Read bandwidth in bytes/s: ``threads`` NumPy sums over disjoint parts of one array."""
    data = np.ones(mb * (1 << 20) // 4, dtype=np.float32)
    parts = np.array_split(data, threads)
    best = 0.0
    for _ in range(5):
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, data.nbytes / (time.perf_counter() - t))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=32)
    add_run_args(p)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "PADDLELLM_NUM_THREADS": str(args.threads)}
    rng = np.random.default_rng(0)
    prompts = {"fixed": rng.integers(0, args.vocab, (8, args.prompt_len)).tolist(),
               "ragged": [rng.integers(0, args.vocab, int(n)).tolist()
                          for n in rng.integers(8, 4 * args.prompt_len, args.requests)]}
    with tempfile.TemporaryDirectory() as tmp:
        make_checkpoint(tmp, args, max_position_embeddings=256)
        per_token, total = weight_bytes_per_token(tmp)
        prompts_file = os.path.join(tmp, "prompts.json")
        Path(prompts_file).write_text(json.dumps(prompts))
        n = str(args.max_new_tokens)
        results: dict[str, list[dict]] = {"paddlellm": [], "transformers": []}
        for r in range(args.rounds):
            results["paddlellm"].append(run_worker([sys.executable, "-c", PADDLE_WORKER, tmp,
                                             prompts_file, n], env))
            results["transformers"].append(run_worker([args.torch_python, "-c", TORCH_WORKER, tmp,
                                                prompts_file, n, str(args.threads)], env))
            print(f"round {r + 1}: " + "; ".join(
                f"{k} b1 {v[-1]['decode_b1']:.1f}, b8 {v[-1]['decode_b8']:.1f} tok/s, "
                f"{args.requests} requests {v[-1]['throughput_concurrent']:.1f} tok/s"
                for k, v in results.items()), flush=True)
    bandwidth = memory_bandwidth(args.threads)
    metrics = ("decode_b1", "decode_b8", "throughput_concurrent")
    med = {k: {m: statistics.median(x[m] for x in v) for m in metrics} for k, v in results.items()}
    ours, theirs = med["paddlellm"], med["transformers"]
    a, b = results["paddlellm"][0]["b1_tokens"], results["transformers"][0]["b1_tokens"]
    floor_tps = bandwidth / per_token
    report = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "weights_mb": total / 1e6, "weight_mb_read_per_token": per_token / 1e6,
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "median": med,
        "ratio_paddlellm_over_transformers": {m: ours[m] / theirs[m] for m in metrics},
        "b1_floor_ms_per_token": 1e3 / floor_tps, "b1_floor_tokens_per_s": floor_tps,
        "b1_fraction_of_floor": {"paddlellm": ours["decode_b1"] / floor_tps,
                                 "transformers": theirs["decode_b1"] / floor_tps},
        "greedy_tokens_agree_b1": sum(x == y for x, y in zip(a, b)) / max(len(a), 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
