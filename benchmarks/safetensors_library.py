"""The ``safetensors`` library against the core's own safetensors reader and writer.

    .venv/bin/python benchmarks/safetensors_library.py [--mb 400]

Issue 21 asked to use the library wherever it does the job and to keep hand-written code
only where a measured need requires it. Each phase runs in a fresh subprocess and prints
the growth of peak RSS (VmHWM) over the RSS before the phase, and its wall time, on a
synthetic float32 checkpoint of ``--mb`` MB in 10 MB tensors:

* ``save/library``  ``safetensors.numpy.save_file`` of arrays already in memory;
* ``save/core``     ``save_state_dict`` of the same arrays (the streaming writer);
* ``convert/library`` a lazily produced checkpoint (each tensor made on demand, as a
  conversion, a merge or a Paddle model's ``state_dict`` -> NumPy does): the library needs
  every array at once, so they are materialised first;
* ``convert/core``  the same sources through ``write_safetensors``, one tensor at a time;
* ``load/library``  ``safetensors.numpy.load_file`` of the whole file;
* ``load/core``     every tensor through ``CheckpointReader`` (mmapped), one at a time;
* ``one/library``, ``one/core``: open the file and read its last tensor;
* ``bf16/library``  ``safe_open(framework="numpy")`` on a bfloat16 tensor (what most Hub
  checkpoints hold).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

TENSOR = 10 * 2**20 // 4  # float32 items per 10 MiB tensor


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)


def _arrays(n: int):
    import numpy as np

    for i in range(n):
        yield f"layers.{i}.weight", np.full(TENSOR, i, dtype=np.float32)


def phase(kind: str, path: str, n: int, work: str) -> None:
    import numpy as np

    what, _, impl = kind.partition("/")
    if what == "save":
        state = dict(_arrays(n))
    base, start = _status("VmRSS"), time.perf_counter()
    detail = ""
    if kind == "save/library":
        from safetensors.numpy import save_file

        save_file(state, os.path.join(work, "lib.safetensors"), metadata={"format": "pt"})
    elif kind == "save/core":
        from paddlellm.checkpoint import save_state_dict

        save_state_dict(state, work, prefix="core", max_shard_size=2**62)
    elif kind == "convert/library":
        from safetensors.numpy import save_file

        save_file(dict(_arrays(n)), os.path.join(work, "lib.safetensors"))
    elif kind == "convert/core":
        from paddlellm.checkpoint.safetensors_io import TensorSource, write_safetensors

        sources = [TensorSource(f"layers.{i}.weight", "float32", (TENSOR,),
                                lambda i=i: np.full(TENSOR, i, dtype=np.float32))
                   for i in range(n)]
        write_safetensors(os.path.join(work, "core.safetensors"), sources)
    elif kind == "load/library":
        from safetensors.numpy import load_file

        total = sum(float(a[0]) for a in load_file(path).values())
        detail = f"checksum {total:.0f}"
    elif kind == "load/core":
        from paddlellm.checkpoint import CheckpointReader

        with CheckpointReader(path) as reader:
            total = sum(float(reader.get_numpy(k)[0]) for k in reader)
        detail = f"checksum {total:.0f}"
    elif kind == "one/library":
        from safetensors import safe_open

        with safe_open(path, framework="numpy") as f:
            detail = f"value {f.get_tensor(f'layers.{n - 1}.weight')[0]:.0f}"
    elif kind == "one/core":
        from paddlellm.checkpoint import CheckpointReader

        with CheckpointReader(path) as reader:
            detail = f"value {reader.get_numpy(f'layers.{n - 1}.weight')[0]:.0f}"
    elif kind == "bf16/library":
        from safetensors import safe_open

        bf16 = os.path.join(work, "bf16.safetensors")
        from paddlellm.checkpoint.safetensors_io import TensorSource, write_safetensors

        write_safetensors(bf16, [TensorSource("w", "bfloat16", (4,),
                                              lambda: np.zeros(4, dtype=np.uint16))])
        try:
            with safe_open(bf16, framework="numpy") as f:
                f.get_tensor("w")
            detail = "read"
        except Exception as exc:  # noqa: BLE001 - the point is which error
            detail = f"fails: {type(exc).__name__}: {str(exc)[:70]}"
    seconds = time.perf_counter() - start
    peak = _status("VmHWM")
    print(f"{kind:16s} peak RSS growth {(peak - base) / 2**20:7.1f} MiB  {seconds:6.2f} s  {detail}",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--mb", type=int, default=400)
    p.add_argument("--phase", default=None)
    p.add_argument("--path", default=None)
    p.add_argument("--work", default=None)
    args = p.parse_args()
    n = max(1, args.mb // 10)
    if args.phase:
        phase(args.phase, args.path, n, args.work)
        return
    with tempfile.TemporaryDirectory() as work:
        import numpy as np

        from paddlellm.checkpoint import save_state_dict

        save_state_dict(dict(_arrays(n)), work, prefix="model", max_shard_size=2**62)
        path = os.path.join(work, "model.safetensors")
        del np
        print(f"{n} float32 tensors of 10 MiB ({n * 10} MiB); growth of peak RSS over the "
              "RSS before each phase, fresh process each")
        for kind in ("save/library", "save/core", "convert/library", "convert/core",
                     "load/library", "load/core", "one/library", "one/core", "bf16/library"):
            subprocess.run([sys.executable, __file__, "--mb", str(args.mb), "--phase", kind,
                            "--path", path, "--work", work], check=True)


if __name__ == "__main__":
    main()
