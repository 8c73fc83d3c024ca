"""Save a state dict in the Hugging Face layout, sharded as ``transformers`` shards it.

Each shard is one :func:`~paddlellm.checkpoint.safetensors_io.write_safetensors` call: NumPy
arrays already in memory are written by the ``safetensors`` library, Paddle tensors, casts and
bfloat16 by the streaming writer, one tensor at a time (measured in that module's docstring:
the library's API needs every tensor in memory at once).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

from ._dtypes import FLOATING, canonical_dtype, convert_storage
from ._paddle import is_paddle_tensor  # imports no paddle
from .safetensors_io import TensorSource, write_safetensors

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str) -> int:
    """``"5GB"`` -> 5*10**9, ``"500MB"``, ``"2GiB"`` -> 2*2**30; ints pass through."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size <= 0:
            raise ValueError(f"size must be positive, got {size}")
        return int(size)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(size))
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _UNITS:
        raise ValueError(f"cannot parse size {size!r}: expected e.g. 5GB, 500MB, 2GiB or a byte count")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ValueError(f"size must be positive, got {size!r}")
    return value


def plan_shards(tensors: Iterable[TensorSource], max_shard_size: int) -> list[list[TensorSource]]:
    """Split in key order like huggingface_hub: a new shard when the next tensor would overflow
    the current one; a tensor larger than the limit gets a shard of its own."""
    shards: list[list[TensorSource]] = []
    current: list[TensorSource] = []
    current_size = 0
    for t in tensors:
        if t.nbytes > max_shard_size:
            shards.append([t])
            continue
        if current_size + t.nbytes > max_shard_size and current:
            shards.append(current)
            current, current_size = [], 0
        current.append(t)
        current_size += t.nbytes
    if current or not shards:
        shards.append(current)
    return shards


def _source(name: str, value, dtype: str | None) -> TensorSource:
    """A writer source for a NumPy array / paddle.Tensor, cast to ``dtype`` for floating data."""
    if is_paddle_tensor(value):
        from ._paddle import paddle_dtype_name, paddle_to_storage
        src = paddle_dtype_name(value)
        shape = tuple(int(d) for d in value.shape)
        load = lambda v=value: paddle_to_storage(v)  # noqa: E731
    else:
        arr = np.asarray(value)
        if arr.dtype.name == "bfloat16":  # ml_dtypes arrays
            arr, src = arr.view(np.uint16), "bfloat16"
        else:
            src = canonical_dtype(arr.dtype)
            if arr.dtype.byteorder == ">":
                arr = arr.astype(arr.dtype.newbyteorder("<"))
        shape = arr.shape
        load = lambda a=arr: a  # noqa: E731
    dst = dtype if (dtype is not None and src in FLOATING) else src
    if dst != src:
        inner = load
        load = lambda: convert_storage(inner(), src, dst)  # noqa: E731
    in_memory = not is_paddle_tensor(value) and dst == src
    return TensorSource(name, dst, tuple(shape), load, array=arr if in_memory else None)


def _shard_name(prefix: str, i: int, n: int) -> str:
    return f"{prefix}.safetensors" if n == 1 else f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors"


def write_sharded(sources: list[TensorSource], directory: str | os.PathLike, *, max_shard_size: int | str = "5GB",
                  metadata: dict | None = None, prefix: str = "model") -> list[str]:
    """Write tensor sources as ``prefix.safetensors`` or shards + index; returns the file names."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ValueError("duplicate tensor names in state dict")
    shards = plan_shards(sources, parse_size(max_shard_size))
    meta = {"format": "pt"} if metadata is None else dict(metadata)
    files = [_shard_name(prefix, i, len(shards)) for i in range(len(shards))]
    index_name = f"{prefix}.safetensors.index.json"
    tmp = {f: directory / f".{f}.tmp{os.getpid()}" for f in files + [index_name]}
    try:
        total = 0
        for fname, shard in zip(files, shards):
            total += write_safetensors(tmp[fname], shard, meta)
        if len(files) > 1:
            index = {
                "metadata": {"total_parameters": int(sum(int(np.prod(s.shape, dtype=np.int64)) for s in sources)),
                             "total_size": total},
                "weight_map": {s.name: f for f, shard in zip(files, shards) for s in shard},
            }
            tmp[index_name].write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            files_written = files + [index_name]
        else:
            files_written = files
        for f in files_written:
            os.replace(tmp[f], directory / f)
    finally:
        for p in tmp.values():
            if p.exists():
                p.unlink()
    _remove_stale(directory, prefix, set(files_written))
    return files_written


def _remove_stale(directory: Path, prefix: str, keep: set[str]) -> None:
    """Delete safetensors weights of an earlier save with ``prefix`` that this save did not write."""
    pattern = re.compile(re.escape(prefix) + r"(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?")
    for p in directory.iterdir():
        if p.is_file() and p.name not in keep and pattern.fullmatch(p.name):
            p.unlink()


def save_state_dict(state: Mapping[str, object], directory: str | os.PathLike, *,
                    max_shard_size: int | str = "5GB", metadata: dict | None = None,
                    prefix: str = "model", dtype: str | None = None) -> list[str]:
    """Save NumPy arrays / paddle Tensors as Hugging Face safetensors; returns the file names.

    One ``{prefix}.safetensors``, or ``{prefix}-0000i-of-0000N.safetensors`` shards plus
    ``{prefix}.safetensors.index.json`` when above ``max_shard_size`` (split as
    ``transformers`` splits). Header metadata defaults to ``{"format": "pt"}`` (what
    ``transformers`` expects). ``dtype`` casts floating tensors (e.g. ``"bfloat16"``).
    Files are written under temporary names and renamed at the end; shards of an earlier
    save in the same directory are removed. Tensors are converted one at a time.
    """
    dst = canonical_dtype(dtype) if dtype is not None else None
    sources = [_source(str(k), v, dst) for k, v in state.items()]
    return write_sharded(sources, directory, max_shard_size=max_shard_size, metadata=metadata, prefix=prefix)
