"""Streaming checkpoint I/O for merging, on top of :mod:`paddlellm.checkpoint`.

Reading goes through the core's lazy :class:`~paddlellm.checkpoint.CheckpointReader` (each
tensor mmapped when asked for, released when freed; safetensors or PyTorch ``.bin``).
Writing goes through the core's sharded writer with one *loader* per tensor, called in
order while the shard is written: a merged tensor exists only while it is written.
bfloat16 is carried as raw ``uint16`` bits (round-to-nearest-even).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from .errors import MergeError

FLOATING = {"float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2"}
OUTPUT_FLOATING = ("float32", "float16", "bfloat16", "float64")


def canonical_dtype(name: str) -> str:
    """``"bf16"`` -> ``"bfloat16"``; a name that is not an output float dtype is an error."""
    from paddlellm.api import canonical_dtype as core_canonical

    try:
        key = core_canonical(str(name))
    except Exception:
        key = None
    if key not in OUTPUT_FLOATING:
        raise MergeError(f"unknown dtype '{name}'; expected one of {', '.join(OUTPUT_FLOATING)}")
    return key


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    """Float32 math results -> the storage array of ``dtype`` (bfloat16 as bits)."""
    from paddlellm.api import convert_storage

    if x.dtype != np.float32 and dtype in FLOATING:
        x = x.astype(np.float32)
    return np.ascontiguousarray(convert_storage(x, "float32", dtype) if dtype in FLOATING else x)


def parse_size(size: str | int) -> int:
    from paddlellm.api import parse_size as core_parse

    try:
        return core_parse(size)
    except ValueError as exc:
        raise MergeError(str(exc)) from None


def nbytes_of(shape, dtype: str) -> int:
    from paddlellm.api import STORAGE_NUMPY

    return int(np.prod(shape, dtype=np.int64)) * STORAGE_NUMPY[dtype].itemsize


class Reader:
    """One checkpoint (directory or weights file), read tensor by tensor; picklable (worker
    processes reopen it by path)."""

    def __init__(self, path: str):
        self.path = path
        self._reader = None
        self._headers: dict = {}  # file -> safetensors entries (for row reads)
        self._files: dict = {}
        self._open()

    def _open(self):
        from paddlellm.api import CheckpointError, CheckpointReader

        if self._reader is None:
            try:
                self._reader = CheckpointReader(self.path)
            except (CheckpointError, FileNotFoundError, OSError) as exc:
                raise MergeError(f"cannot read checkpoint '{self.path}': {exc}") from None
        return self._reader

    def keys(self) -> list[str]:
        return self._open().keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._open().shape(name))

    def dtype(self, name: str) -> str:
        return self._open().dtype(name)

    def get(self, name: str) -> np.ndarray:
        """float32 for floating tensors (bf16 widened exactly), else the stored dtype."""
        arr = self._open().get_numpy(name)
        return arr.astype(np.float32) if self.dtype(name) in FLOATING and arr.dtype != np.float32 \
            else arr

    def get_rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (along dim 0) as :meth:`get` would give them; safetensors reads only
        those bytes (``.bin`` falls back to reading the whole tensor)."""
        from paddlellm.api import STORAGE_NUMPY
        from paddlellm.api import SafetensorsFile

        shape, dtype = self.shape(name), self.dtype(name)
        path = str(self._open().file_of(name))
        if not path.endswith(".safetensors") or not shape:
            return np.array(self.get(name)[r0:r1])
        if path not in self._headers:
            st = SafetensorsFile(path)
            self._headers[path] = st.entries
            st.close()
            self._files[path] = open(path, "rb")
        entry = self._headers[path][name]
        storage = STORAGE_NUMPY[dtype]
        row = int(np.prod(shape[1:], dtype=np.int64))
        out = np.empty((r1 - r0) * row, dtype=storage)
        f = self._files[path]
        f.seek(entry.begin + r0 * row * storage.itemsize)
        if f.readinto(memoryview(out).cast("B")) != out.nbytes:
            raise MergeError(f"{path}: truncated data for tensor {name}")
        out = out.reshape((r1 - r0, *shape[1:]))
        if dtype in FLOATING and dtype != "float32":
            from paddlellm.api import widen

            out = widen(out, dtype) if dtype not in ("float16", "float64") else out
            out = out.astype(np.float32, copy=False)
        return out

    def __getstate__(self):
        return {"path": self.path, "_reader": None, "_headers": {}, "_files": {}}


def write_streaming(directory: str, plan: Iterable[tuple[str, tuple[int, ...], str]],
                    load: Callable[[str], np.ndarray], *, max_shard_size: str | int = "5GB",
                    prefix: str = "model", metadata: dict | None = None) -> list[str]:
    """Write tensors ``(name, shape, dtype)`` in order; ``load(name)`` gives each one's storage
    array just when it is written. Returns the files written (shards + index)."""
    from paddlellm.api import TensorSource
    from paddlellm.api import write_sharded

    sources = [TensorSource(name, dtype, tuple(shape), (lambda n=name: load(n)))
               for name, shape, dtype in plan]
    meta = {"format": "pt", **(metadata or {})}
    return write_sharded(sources, directory, max_shard_size=parse_size(max_shard_size),
                         metadata=meta, prefix=prefix)
