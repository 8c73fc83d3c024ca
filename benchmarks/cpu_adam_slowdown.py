#!/usr/bin/env python3
"""Reproduces a Paddle 3.3.1 CPU slowdown that dominates our training-step benchmark.

After the first Adam/AdamW optimizer step (SGD is fine), every later multi-threaded matmul in
the process runs ~4-5x slower (2 threads: 26 ms -> 130 ms for 1024x512 @ 512x1408), and it
stays slow (not a spin-wait: sleeping does not help; KMP_BLOCKTIME, GOMP_SPINCOUNT,
OMP_WAIT_POLICY do not help). One thread after the step takes ~50 ms. libpaddle links both
libiomp5 and libgomp. Run:

    .venv/bin/python benchmarks/cpu_adam_slowdown.py [sgd|adam|adamw]
"""
import sys
import time

from paddlellm_backend_cpu.backend import backend

backend.setup()
import paddle  # noqa: E402

kind = sys.argv[1] if len(sys.argv) > 1 else "adamw"
lin = paddle.nn.Linear(512, 1408)
x = paddle.randn([1024, 512])
opt = {"sgd": paddle.optimizer.SGD, "adam": paddle.optimizer.Adam,
       "adamw": paddle.optimizer.AdamW}[kind](1e-4, parameters=lin.parameters())


def timed(tag):
    for _ in range(2):
        lin(x)
    start = time.perf_counter()
    for _ in range(10):
        lin(x)
    print(f"{tag:<28} {(time.perf_counter() - start) / 10 * 1000:7.1f} ms per linear")


timed("before any optimizer step")
lin(x).sum().backward()
opt.step()
opt.clear_grad()
timed(f"after one {kind} step")
