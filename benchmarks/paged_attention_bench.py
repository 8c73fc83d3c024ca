#!/usr/bin/env python3
"""Paged-attention decode at long context: the compiled ``cpu`` kernel vs ``reference``.

One layer's decode call for ``--seqs`` sequences of ``--context`` cached keys (GQA 8/4,
head_dim 64, blocks of 64, as the engine lays them out), fresh call metadata per batch of
``--calls`` calls, best of ``--rounds``; Paddle's stride kernels off, as in the engine. Needs
``paddlellm-kernels-cpu`` importable and its library built.

    .venv/bin/python benchmarks/paged_attention_bench.py [--seqs 8 --context 1024 --threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seqs", type=int, default=8)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--calls", type=int, default=5)
    args = p.parse_args()
    os.environ["PADDLELLM_NUM_THREADS"] = str(args.threads)
    import paddle

    from paddlellm.modeling.kv_manager import PagedKVCache
    from paddlellm_kernels_cpu import build
    from paddlellm_kernels_cpu.attention import kernel as compiled
    from paddlellm_kernels_reference.kernel import kernel as reference

    if build.ops() is None:
        raise SystemExit(f"compiled kernels unavailable: {build.info()['detail']}")
    paddle.set_flags({"FLAGS_use_stride_kernel": False})
    paddle.base.core.set_num_threads(args.threads)
    s, ctx, hq, hkv, d, bs = args.seqs, args.context, 8, 4, 64, 64
    cache = PagedKVCache(1, s * (-(-ctx // bs)) + 1, bs, hkv, d)
    ids = [f"s{i}" for i in range(s)]
    for sid in ids:
        cache.blocks.allocate(sid, ctx)
    rng = np.random.default_rng(0)
    kv = paddle.to_tensor(rng.standard_normal((1, s * (ctx - 1), hkv, d)).astype(np.float32))
    cache.batch(ids, [0] * s, [ctx - 1] * s)[0].write(kv, kv)
    q = paddle.to_tensor(rng.standard_normal((1, s, hq, d)).astype(np.float32))
    k = paddle.to_tensor(rng.standard_normal((1, s, hkv, d)).astype(np.float32))
    outs, best = {}, {}
    for name, kernel in (("reference", reference), ("cpu", compiled)):
        best[name] = float("inf")
        for _ in range(args.rounds):
            call = cache.batch(ids, [ctx - 1] * s, [1] * s)  # new metadata, as each engine step
            t = time.perf_counter()
            for _ in range(args.calls):
                outs[name] = kernel(q, k, k, cache=call[0])
            best[name] = min(best[name], (time.perf_counter() - t) / args.calls)
        print(f"{name:10s} {best[name] * 1e3:8.2f} ms per layer call")
    kv_mb = 2 * s * ctx * hkv * d * 4 / 1e6
    print(f"ratio reference/cpu {best['reference'] / best['cpu']:.1f}; cpu reads {kv_mb:.1f} MB of "
          f"keys/values at {kv_mb / 1e3 / best['cpu']:.1f} GB/s; max |cpu - reference| "
          f"{float(np.abs(outs['cpu'].numpy() - outs['reference'].numpy()).max()):.1e}")


if __name__ == "__main__":
    main()
