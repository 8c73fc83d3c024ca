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

Quantized and compiled-kernel variants of the engine run in the same interleaved rounds:
``--quant_types float32,weight_only_int8,weight_only_int4`` quantizes the checkpoint
(round-to-nearest, per channel) for the extra variants, and ``--cpu_kernels compare`` runs
each variant with the compiled kernels of ``paddlellm-kernels-cpu`` off
(``PADDLELLM_CPU_KERNELS=0``) and on; ``--skip_transformers`` leaves the torch side out.

The transformers side runs in an interpreter with torch (dev-only; default
the repository's .venv-bench or .venv-oracle, or --torch-python / $PADDLELLM_DEV_PYTHON).
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


def agreement(a: list[int], b: list[int]) -> float:
    """Share of positions where two greedy token lists agree."""
    return sum(x == y for x, y in zip(a, b)) / max(len(b), 1)


def quantized_checkpoint(src: str, quant_type: str, directory: str) -> None:
    """``src`` quantized with ``quant_type`` (no calibration) and saved to ``directory``."""
    from paddlellm import AutoModelForCausalLM
    from paddlellm.plugin.manager import get_registry

    model = AutoModelForCausalLM.from_pretrained(src)
    get_registry().load("quantizer", quant_type).quantize(model, quant_type, None, {})
    model.save_pretrained(directory)


def paddle_variants(args, base: str, tmp: str) -> dict[str, tuple[str, dict]]:
    """label -> (checkpoint, extra environment) of every engine variant to run."""
    out = {}
    for qt in args.quant_types.split(","):
        path = base if qt == "float32" else os.path.join(tmp, qt)
        if qt != "float32":
            quantized_checkpoint(base, qt, path)
        if args.cpu_kernels == "compare":
            out[f"paddlellm {qt}"] = (path, {"PADDLELLM_CPU_KERNELS": "0"})
            out[f"paddlellm {qt} +cpu kernels"] = (path, {"PADDLELLM_CPU_KERNELS": "1"})
        else:
            out[f"paddlellm {qt}" if qt != "float32" else "paddlellm"] = (path, {})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=32)
    add_run_args(p)
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--quant_types", default="float32",
                   help="comma list of engine variants: float32, weight_only_int8, weight_only_int4")
    p.add_argument("--cpu_kernels", choices=("auto", "compare"), default="auto",
                   help="compare: run each variant without and with paddlellm-kernels-cpu")
    p.add_argument("--skip_transformers", action="store_true")
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
        variants = paddle_variants(args, tmp, tmp)
        results: dict[str, list[dict]] = {k: [] for k in variants}
        if not args.skip_transformers:
            results["transformers"] = []
        for r in range(args.rounds):
            for label, (path, extra) in variants.items():
                results[label].append(run_worker([sys.executable, "-c", PADDLE_WORKER, path,
                                                  prompts_file, n], {**env, **extra}))
            if not args.skip_transformers:
                results["transformers"].append(run_worker(
                    [args.torch_python, "-c", TORCH_WORKER, tmp, prompts_file, n,
                     str(args.threads)], env))
            print(f"round {r + 1}: " + "; ".join(
                f"{k} b1 {v[-1]['decode_b1']:.1f}, b8 {v[-1]['decode_b8']:.1f} tok/s, "
                f"{args.requests} requests {v[-1]['throughput_concurrent']:.1f} tok/s"
                for k, v in results.items()), flush=True)
    bandwidth = memory_bandwidth(args.threads)
    metrics = ("decode_b1", "decode_b8", "throughput_concurrent")
    med = {k: {m: statistics.median(x[m] for x in v) for m in metrics} for k, v in results.items()}
    first = next(iter(variants))  # the float32 engine without extra settings
    floor_tps = bandwidth / per_token  # of the float32 weights
    report = {
        "config": {k: v for k, v in vars(args).items() if k != "json"},
        "weights_mb": total / 1e6, "weight_mb_read_per_token": per_token / 1e6,
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "median": med,
        f"ratio_over_{first.replace(' ', '_')}": {
            k: {m: v[m] / med[first][m] for m in metrics} for k, v in med.items() if k != first},
        "b1_floor_ms_per_token": 1e3 / floor_tps, "b1_floor_tokens_per_s": floor_tps,
        "b1_fraction_of_float32_floor": {k: v["decode_b1"] / floor_tps for k, v in med.items()},
        # greedy tokens at batch 1 equal to those of the same weights without the compiled
        # kernels (for "+cpu kernels" variants), else to the first variant's
        "greedy_tokens_agree_b1": {
            k: agreement(results[k.removesuffix(" +cpu kernels") if k.endswith(" +cpu kernels")
                                 else first][0]["b1_tokens"], v[0]["b1_tokens"])
            for k, v in results.items() if k != first},
    }
    if not args.skip_transformers:
        ours, theirs = med[first], med["transformers"]
        report["ratio_paddlellm_over_transformers"] = {m: ours[m] / theirs[m] for m in metrics}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)


if __name__ == "__main__":
    main()
