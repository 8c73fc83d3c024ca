"""Peak memory of checkpoint I/O: reading a model tensor by tensor should cost about one tensor.

    .venv/bin/python benchmarks/checkpoint_memory.py [--mb 400] [--bin path/to/pytorch_model.bin]

Writes a synthetic safetensors checkpoint of ``--mb`` MB (float32, 10 MB tensors) to a temp
dir with the streaming writer, then runs each phase in a fresh subprocess and prints the
growth of peak RSS (VmHWM) over the RSS before the phase: read all tensors as NumPy, as
Paddle tensors, convert to bfloat16 (streaming). ``--bin`` adds a read of a torch ``.bin``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def phase(kind: str, path: str, out: str) -> None:
    import numpy as np

    from paddlellm.checkpoint import CheckpointReader, convert_checkpoint

    if kind == "paddle":
        import paddle  # noqa: F401  (baseline includes Paddle itself)
    base = _status("VmRSS")
    biggest = 0
    if kind == "convert":
        convert_checkpoint(path, out, dtype="bfloat16", max_shard_size="100MB")
        with CheckpointReader(path) as r:
            biggest = max(r.get_raw(k).nbytes for k in r)
    else:
        with CheckpointReader(path) as r:
            total = 0.0
            for k in r:
                if kind == "paddle":
                    t = r.get_tensor(k)
                    biggest = max(biggest, int(np.prod(t.shape)) * 4)
                    total += float(t.sum())
                else:
                    a = r.get_numpy(k)
                    biggest = max(biggest, a.nbytes)
                    total += float(a.sum(dtype=np.float64))
                del k
    peak = _status("VmHWM")
    print(f"{kind:8s} peak RSS growth {(peak - base) / 1e6:7.1f} MB  (largest tensor {biggest / 1e6:.1f} MB)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=400)
    p.add_argument("--bin", default=None)
    p.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    p.add_argument("--path", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        return phase(args.phase, args.path, args.out)

    import numpy as np

    from paddlellm.checkpoint.safetensors_io import TensorSource
    from paddlellm.checkpoint.writer import write_sharded

    n = 2_500_000  # 10 MB of float32 per tensor
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        rng = np.random.default_rng(0)
        sources = [TensorSource(f"layers.{i}.weight", "float32", (n // 1000, 1000),
                                lambda: rng.standard_normal((n // 1000, 1000), dtype=np.float32))
                   for i in range(args.mb // 10)]
        base = _status("VmRSS")
        write_sharded(sources, src, max_shard_size="200MB")
        print(f"{'write':8s} peak RSS growth {(_status('VmHWM') - base) / 1e6:7.1f} MB  "
              f"(streaming writer, {args.mb} MB checkpoint)")
        runs = [("numpy", src), ("paddle", src), ("convert", src)]
        if args.bin:
            runs.append(("numpy", args.bin))
        for kind, path in runs:
            cmd = [sys.executable, __file__, "--phase", kind, "--path", path, "--out", os.path.join(tmp, "out")]
            subprocess.run(cmd, check=True, env={**os.environ, "GLOG_minloglevel": "3"})


if __name__ == "__main__":
    main()
