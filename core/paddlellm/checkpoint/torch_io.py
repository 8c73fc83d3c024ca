"""PyTorch ``.bin`` / ``.pt`` checkpoints read without PyTorch and without running pickled code.

``torch.save`` (zip format, torch >= 1.6) writes ``<root>/data.pkl`` (the pickled state dict,
tensors as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with
storages as persistent ids ``('storage', torch.FloatStorage, key, location, numel)``) and the
raw bytes of each storage in ``<root>/data/<key>``. The unpickler here resolves only the
handful of globals a state dict uses, to inert stand-ins; every other global raises
:class:`UnsafeCheckpointError` before it is even looked up. Storages are mmapped lazily
(torch stores zip members uncompressed). The legacy format (``_use_new_zipfile_serialization
=False``: consecutive pickles, then the storages) is read too.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass

import numpy as np

from ._dtypes import STORAGE_NUMPY, canonical_dtype
from ._errors import CheckpointFormatError, UnsafeCheckpointError
from .safetensors_io import map_region, read_at

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_TORCH_DTYPES = {
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float", "double", "half", "long", "int", "short", "float8_e4m3fn", "float8_e5m2",
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co: it only carries the dtype name."""

    def __init__(self, dtype: str):
        self.dtype = dtype


class _DType(str):
    """Stand-in for a ``torch.<dtype>`` object."""


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor inside a storage: element offset, shape and element strides."""
    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.dtype


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None):
    if not isinstance(storage, StorageRef):
        raise CheckpointFormatError(f"_rebuild_tensor_v2 got {type(storage).__name__}, expected a storage")
    shape, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(shape) != len(stride) or min(stride, default=0) < 0 or storage_offset < 0:
        raise CheckpointFormatError(f"bad tensor geometry size={size} stride={stride}")
    if any(d == 0 for d in shape):
        return TensorRef(storage, int(storage_offset), shape, stride)
    last = int(storage_offset) + sum((d - 1) * s for d, s in zip(shape, stride))
    if last >= storage.numel:
        raise CheckpointFormatError(f"tensor view (offset {storage_offset}, size {shape}, stride "
                                    f"{stride}) runs past its storage of {storage.numel} elements")
    return TensorRef(storage, int(storage_offset), shape, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if new_type not in ("Tensor", "Parameter"):
        raise CheckpointFormatError(f"tensor subclass {new_type!r} is not supported")
    return func(*args)


def _codecs_encode(obj, encoding="utf-8"):  # how protocol-2 pickles carry bytes
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointFormatError("unexpected _codecs.encode call in pickle")
    return obj.encode("latin1")


def _allowed_global(module: str, name: str):
    if (module, name) == ("collections", "OrderedDict"):
        return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
        return _rebuild_tensor_v2
    if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        return _rebuild_parameter
    if (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):
        return _rebuild_from_type_v2
    if (module, name) == ("torch", "Tensor") or (module, name) == ("torch.nn.parameter", "Parameter"):
        return name
    if (module, name) == ("torch", "Size"):
        return tuple
    if (module, name) == ("_codecs", "encode"):
        return _codecs_encode
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(_STORAGE_DTYPES[name])
    if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
        return _StorageType("uint8")
    if module == "torch" and name in _TORCH_DTYPES:
        return _DType(canonical_dtype(name))
    return None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a torch state dict; any global outside the allow-list is refused."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module, name):
        obj = _allowed_global(module, name)
        if obj is None:
            raise UnsafeCheckpointError(
                f"{self.source}: refusing to load pickled global '{module}.{name}' — a state dict "
                "only needs tensors, and executing arbitrary pickled code is unsafe. Nothing was "
                "executed. If you trust this file, re-save it as safetensors with PyTorch.")
        return obj

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointFormatError(f"{self.source}: unsupported persistent id {pid!r:.200}")
        _, stype, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:  # legacy storage views
            raise CheckpointFormatError(f"{self.source}: legacy storage views are not supported; "
                                        "re-save the checkpoint with a newer PyTorch")
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(key, stype.dtype, int(numel))
        return ref


def _flatten(obj, prefix: str, out: dict[str, TensorRef]) -> None:
    """State dict (possibly nested) -> flat ``{dotted name: TensorRef}``; non-tensors are dropped."""
    if isinstance(obj, TensorRef):
        out[prefix] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)


class TorchBinFile:
    """One ``torch.save`` file opened lazily: storages are mmapped when a tensor is read."""

    format = "torch"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = open(self.path, "rb")
        self._zip: zipfile.ZipFile | None = None
        self._byteorder = "little"
        try:
            if zipfile.is_zipfile(self._file):
                obj, self._locate = self._open_zip()
            else:
                obj, self._locate = self._open_legacy()
        except UnsafeCheckpointError:
            self.close()
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, KeyError, ValueError,
                TypeError, IndexError, AttributeError) as e:
            self.close()
            if isinstance(e, CheckpointFormatError):
                raise
            raise CheckpointFormatError(f"{self.path}: not a readable PyTorch checkpoint "
                                        f"({type(e).__name__}: {e})") from None
        self.entries: dict[str, TensorRef] = {}
        _flatten(obj, "", self.entries)

    # --- zip format -------------------------------------------------------------------------
    def _open_zip(self):
        self._file.seek(0)
        zf = self._zip = zipfile.ZipFile(self._file)
        pkl = [n for n in zf.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointFormatError(f"{self.path}: zip file without <root>/data.pkl; not a torch.save file")
        root = pkl[0][: -len("data.pkl")]
        if root + "byteorder" in zf.namelist():
            self._byteorder = zf.read(root + "byteorder").decode().strip()
        unpickler = RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), self.path)
        obj = unpickler.load()
        infos = {n: zf.getinfo(n) for n in zf.namelist()}

        def locate(ref: StorageRef):
            info = infos.get(f"{root}data/{ref.key}")
            if info is None:
                raise CheckpointFormatError(f"{self.path}: storage {ref.key} missing from the archive")
            if info.compress_type != zipfile.ZIP_STORED:
                return np.frombuffer(zf.read(info), dtype=STORAGE_NUMPY[ref.dtype])
            local = read_at(self._file, info.header_offset, 30)
            if local[:4] != b"PK\x03\x04":
                raise CheckpointFormatError(f"{self.path}: bad zip local header for storage {ref.key}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            return info.header_offset + 30 + name_len + extra_len
        return obj, locate

    # --- legacy format ----------------------------------------------------------------------
    def _open_legacy(self):
        f = self._file
        f.seek(0)
        up = lambda: RestrictedUnpickler(f, self.path)  # noqa: E731
        magic = up().load()
        if magic != _LEGACY_MAGIC:
            raise CheckpointFormatError(f"{self.path}: not a PyTorch checkpoint (no zip archive, no legacy magic number)")
        up().load()  # protocol version
        sys_info = up().load()
        if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
            self._byteorder = "big"
        main = up()
        obj = main.load()
        keys = up().load()
        offsets: dict[str, int] = {}
        for key in keys:  # each storage: int64 element count, then the bytes
            (numel,) = struct.unpack("<q", f.read(8))
            offsets[str(key)] = f.tell()
            ref = main.storages[str(key)]
            f.seek(numel * STORAGE_NUMPY[ref.dtype].itemsize, os.SEEK_CUR)
        return obj, lambda ref: offsets[ref.key]

    # --- reading ----------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return list(self.entries)

    def read_storage(self, name: str) -> np.ndarray:
        """Tensor ``name`` in storage form (bfloat16 as uint16 bits); read-only, mmapped when
        the tensor is contiguous, else a fresh contiguous copy of the strided view."""
        ref = self.entries[name]
        dt = STORAGE_NUMPY[ref.dtype]
        if self._byteorder != "little":
            dt = dt.newbyteorder(">")
        if any(d == 0 for d in ref.shape):
            return np.empty(ref.shape, dtype=STORAGE_NUMPY[ref.dtype])
        span = 1 + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride))
        where = self._locate(ref.storage)
        if isinstance(where, np.ndarray):  # compressed member, already in memory
            flat = where.view(dt)[ref.offset: ref.offset + span]
        else:
            flat = map_region(self._file, where + ref.offset * dt.itemsize, span, dt)
        contiguous = tuple(int(np.prod(ref.shape[i + 1:], dtype=np.int64)) for i in range(len(ref.shape)))
        if ref.stride == contiguous or len(ref.shape) == 0:
            out = flat[: int(np.prod(ref.shape, dtype=np.int64))].reshape(ref.shape)
        else:
            view = np.lib.stride_tricks.as_strided(
                flat, shape=ref.shape, strides=tuple(s * dt.itemsize for s in ref.stride), writeable=False)
            out = np.ascontiguousarray(view)
        if self._byteorder != "little":
            out = out.astype(STORAGE_NUMPY[ref.dtype])
        return out

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
        self._file.close()


def load_torch_bin(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read one ``torch.save`` file eagerly into NumPy arrays (bfloat16 widened to float32)."""
    from ._dtypes import WIDENED, widen

    f = TorchBinFile(path)
    try:
        out = {}
        for name, ref in f.entries.items():
            arr = f.read_storage(name)
            out[name] = widen(arr, ref.dtype) if ref.dtype in WIDENED else np.array(arr)
        return out
    finally:
        f.close()
