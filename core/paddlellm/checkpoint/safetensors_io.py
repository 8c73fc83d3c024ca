"""safetensors files: a lazy, mmapped reader and a streaming writer (format spec:
8-byte little-endian header length, JSON header, then the raw little-endian data).

The ``safetensors`` library writes a file whenever its tensors are NumPy arrays already in
memory in a dtype NumPy has (``write_safetensors`` hands them to
``safetensors.numpy.save_file``). The rest is hand-written because the library's Python API
cannot do it without a measured cost (``benchmarks/safetensors_library.py --mb 400``: 40
float32 tensors of 10 MiB, growth of peak RSS over the RSS before, 2-core CI machine):

==========================================  =======================  ======================
phase                                       library                  this module
==========================================  =======================  ======================
save arrays already in memory               +0.9 MiB, 0.78 s         +1.6 MiB, 0.81 s
save lazily produced tensors (conversion,   +400.9 MiB, 1.24 s (all  +11.5 MiB, 0.87 s (one
merge, Paddle state dict -> NumPy, casts)   materialised first)      at a time)
read every tensor of a file                 +801.0 MiB, 1.38 s       +1.6 MiB, 0.13 s (mmap)
                                            (``load_file`` copies)
bfloat16 tensors (most Hub checkpoints)     TypeError: data type     uint16 bits, exact
                                            'bfloat16' not understood
==========================================  =======================  ======================

So the writer streams lazily loaded tensors (sharded checkpoints of any size in about one
tensor of memory) and writes bfloat16/float8 as their bits, and the reader maps each tensor
on first use (zero-copy, read-only) and returns bfloat16/float8 as storage bits. Its header
checks (sizes against the file, dtypes, shapes) are those of the format's specification;
``tests/test_checkpoint_security.py`` holds the forged files they reject.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ._dtypes import NAME_TO_SAFETENSORS, SAFETENSORS_TO_NAME, STORAGE_NUMPY
from ._errors import CheckpointFormatError

_MAX_HEADER = 100 * 1024 * 1024  # as the safetensors library
_MAX_DIMS = 64


def map_region(fileobj, offset: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Read-only array of ``count`` ``dtype`` items at byte ``offset`` of an open file, mmapped.

    Only this region is mapped; it is unmapped when the array (and its views) are freed, so
    touching tensors one at a time never keeps the whole file resident.
    """
    nbytes = count * dtype.itemsize
    if nbytes == 0:
        return np.empty((count,), dtype=dtype)
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    try:
        mm = mmap.mmap(fileobj.fileno(), nbytes + offset - start, access=mmap.ACCESS_READ, offset=start)
    except (OSError, ValueError):  # a filesystem without mmap: read the bytes instead
        return np.frombuffer(read_at(fileobj, offset, nbytes), dtype=dtype, count=count)
    return np.frombuffer(mm, dtype=dtype, count=count, offset=offset - start)


def read_at(fileobj, offset: int, nbytes: int) -> bytes:
    """``nbytes`` at ``offset`` without moving the file position where ``os.pread`` exists."""
    if hasattr(os, "pread"):
        data = os.pread(fileobj.fileno(), nbytes, offset)
    else:  # pragma: no cover  (Windows)
        fileobj.seek(offset)
        data = fileobj.read(nbytes)
    if len(data) != nbytes:
        raise CheckpointFormatError(f"{fileobj.name}: unexpected end of file (truncated?)")
    return data


@dataclass(frozen=True)
class SafetensorsEntry:
    dtype: str  # canonical name
    shape: tuple[int, ...]
    begin: int  # absolute byte offset in the file
    end: int


class SafetensorsFile:
    """One ``.safetensors`` file, opened lazily: only the header is read up front."""

    format = "safetensors"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = open(self.path, "rb")
        try:
            self.metadata, self.entries = self._parse_header()
        except BaseException:
            self._file.close()
            raise

    def _parse_header(self):
        size = os.fstat(self._file.fileno()).st_size
        raw = self._file.read(8)
        if len(raw) < 8:
            raise CheckpointFormatError(f"{self.path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > _MAX_HEADER or 8 + n > size:
            raise CheckpointFormatError(f"{self.path}: not a safetensors file (header length {n} "
                                        f"for a {size}-byte file; at most {_MAX_HEADER})")
        text = self._file.read(n)
        try:
            header = json.loads(text)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointFormatError(f"{self.path}: safetensors header is not valid JSON: {e}") from None
        except RecursionError:
            raise CheckpointFormatError(f"{self.path}: safetensors header is nested too deeply "
                                        "(not a safetensors header)") from None
        if not isinstance(header, dict):
            raise CheckpointFormatError(f"{self.path}: safetensors header is not a JSON object")
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise CheckpointFormatError(f"{self.path}: field '__metadata__' must be an object of strings")
        base = 8 + n
        entries: dict[str, SafetensorsEntry] = {}
        for name, info in header.items():
            entries[name] = self._entry(name, info, base, size)
        return metadata, entries

    def _entry(self, name: str, info, base: int, size: int) -> "SafetensorsEntry":
        """One header entry, every field checked against the format and the file's size."""
        def bad(field: str, why: str) -> CheckpointFormatError:
            return CheckpointFormatError(f"{self.path}: tensor {name!r:.100}: field '{field}' {why}")

        if not isinstance(info, dict):
            raise bad("", "is not an object")
        code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(code, str) or code not in SAFETENSORS_TO_NAME:
            raise bad("dtype", f"is {code!r:.40}, not a supported dtype "
                      f"({', '.join(SAFETENSORS_TO_NAME)})")
        if (not isinstance(shape, list) or len(shape) > _MAX_DIMS
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise bad("shape", f"must be a list of at most {_MAX_DIMS} non-negative integers, "
                      f"got {shape!r:.80}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(type(o) is int for o in offsets)):
            raise bad("data_offsets", f"must be two integers, got {offsets!r:.80}")
        dtype = SAFETENSORS_TO_NAME[code]
        numel = 1
        for d in shape:  # Python ints: no overflow, and no wrap-around to a small size
            numel *= d
        want = numel * STORAGE_NUMPY[dtype].itemsize
        b, e = offsets
        if b < 0 or e < b or e - b != want or base + e > size:
            raise bad("data_offsets", f"[{b}, {e}] do not hold a {code} tensor of shape "
                      f"{shape} ({want} bytes) inside the {size}-byte file (truncated or "
                      "forged file?)")
        return SafetensorsEntry(dtype, tuple(shape), base + b, base + e)

    def keys(self) -> list[str]:
        return list(self.entries)

    def read_storage(self, name: str) -> np.ndarray:
        """Tensor ``name`` in storage form (bfloat16 as uint16 bits), read-only and mmapped."""
        ent = self.entries[name]
        dt = STORAGE_NUMPY[ent.dtype]
        count = (ent.end - ent.begin) // dt.itemsize
        return map_region(self._file, ent.begin, count, dt).reshape(ent.shape)

    def close(self) -> None:
        self._file.close()


@dataclass
class TensorSource:
    """What the writer needs of one tensor before its data: the data comes from ``load()``.

    ``load`` returns the tensor in storage form (``STORAGE_NUMPY[dtype]``, bfloat16 as bits).
    ``array``: the tensor itself when it is already a NumPy array in memory in that form (no
    conversion left), so a file of such tensors can be written by the ``safetensors``
    library.
    """
    name: str
    dtype: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    array: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * STORAGE_NUMPY[self.dtype].itemsize


#: dtypes that NumPy holds natively (the ``safetensors`` library's NumPy API writes them)
NUMPY_NATIVE = frozenset(STORAGE_NUMPY) - {"bfloat16", "float8_e4m3fn", "float8_e5m2"}


def write_safetensors(path: str | os.PathLike, tensors: Iterable[TensorSource],
                      metadata: dict[str, str] | None = None) -> int:
    """Write one safetensors file; returns the data size in bytes.

    Tensors that are all NumPy arrays in memory (``TensorSource.array``) in NumPy dtypes go
    through ``safetensors.numpy.save_file``; otherwise they are loaded and written one at a
    time (see the module docstring for why)."""
    tensors = list(tensors)
    if tensors and all(t.array is not None and t.dtype in NUMPY_NATIVE for t in tensors):
        return _save_with_library(path, tensors, metadata)
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": NAME_TO_SAFETENSORS[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for t in tensors:
            arr = t.load()
            want = STORAGE_NUMPY[t.dtype]
            if arr.dtype != want or tuple(arr.shape) != tuple(t.shape):
                raise ValueError(f"tensor {t.name!r}: loader returned {arr.dtype}{list(arr.shape)}, "
                                 f"expected {want}{list(t.shape)}")
            arr = np.ascontiguousarray(arr).reshape(-1)
            if arr.size:
                f.write(memoryview(arr.view(np.uint8)))
            del arr
    return offset


def _save_with_library(path: str | os.PathLike, tensors: list[TensorSource],
                       metadata: dict[str, str] | None) -> int:
    from safetensors.numpy import save_file

    arrays = {}
    for t in tensors:
        arr = t.array
        if arr.dtype != STORAGE_NUMPY[t.dtype] or tuple(arr.shape) != tuple(t.shape):
            raise ValueError(f"tensor {t.name!r}: array is {arr.dtype}{list(arr.shape)}, "
                             f"expected {STORAGE_NUMPY[t.dtype]}{list(t.shape)}")
        arrays[t.name] = np.ascontiguousarray(arr)
    meta = {str(k): str(v) for k, v in metadata.items()} if metadata else None
    save_file(arrays, os.fspath(path), metadata=meta)
    return sum(t.nbytes for t in tensors)
