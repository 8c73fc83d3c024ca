"""PyTorch ``.bin`` / ``.pt`` checkpoints read without PyTorch and without running pickled code.

``torch.save`` (zip format, torch >= 1.6) writes ``<root>/data.pkl`` (the pickled state dict,
tensors as ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` with
storages as persistent ids ``('storage', torch.FloatStorage, key, location, numel)``) and the
raw bytes of each storage in ``<root>/data/<key>``. The unpickler here resolves only the
handful of globals a state dict uses, to inert stand-ins; every other global raises
:class:`UnsafeCheckpointError` before it is even looked up. Storages are mmapped lazily
(torch stores zip members uncompressed). The legacy format (``_use_new_zipfile_serialization
=False``: consecutive pickles, then the storages) is read too.

Costs are bounded by the file's real size, never by what it claims: a zip member is only
read after its declared size has been checked against the archive (stored members) or
against ``PADDLELLM_MAX_ZIP_INFLATION`` times its compressed size (compressed members), and
zipfile never inflates past the declared size; the pickle is run by Python's pure-Python
unpickler (its memo is a dict, so a forged memo index costs nothing, unlike the C
unpickler's array) with at most ``PADDLELLM_MAX_PICKLE_OPS`` opcodes and a budget on what
the allowed calls may build; every storage must fit inside its member.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
import zlib
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
_MAX_DIMS = 64
_MAX_NESTING = 64


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        parsed = int(value)
    except ValueError:
        parsed = 0
    if parsed <= 0:
        from ..errors import ConfigError

        raise ConfigError(f"environment variable {name}={value!r}: expected a positive integer")
    return parsed


def max_zip_inflation() -> int:
    """``PADDLELLM_MAX_ZIP_INFLATION``: largest uncompressed/compressed size ratio of a zip
    member over 1 MiB that is read (default 100; torch itself stores members uncompressed)."""
    return _env_int("PADDLELLM_MAX_ZIP_INFLATION", 100)


def max_pickle_ops() -> int:
    """``PADDLELLM_MAX_PICKLE_OPS``: most pickle opcodes run for one file (default 5,000,000,
    about 200,000 tensors)."""
    return _env_int("PADDLELLM_MAX_PICKLE_OPS", 5_000_000)


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
    if not (isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) <= _MAX_DIMS
            and all(type(d) is int for d in (*size, *stride)) and type(storage_offset) is int):
        raise CheckpointFormatError(f"bad tensor geometry size={size!r:.100} stride={stride!r:.100}")
    shape, stride = size, stride
    if min(shape, default=0) < 0 or min(stride, default=0) < 0 or storage_offset < 0:
        raise CheckpointFormatError(f"bad tensor geometry size={shape} stride={stride}")
    if any(d == 0 for d in shape):
        return TensorRef(storage, storage_offset, shape, stride)
    numel = 1
    for d in shape:
        numel *= d
    last = storage_offset + sum((d - 1) * s for d, s in zip(shape, stride))
    if last >= storage.numel or numel > storage.numel:
        raise CheckpointFormatError(f"tensor view (offset {storage_offset}, size {shape}, stride "
                                    f"{stride}) does not fit its storage of {storage.numel} elements")
    return TensorRef(storage, storage_offset, shape, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if new_type not in ("Tensor", "Parameter"):
        raise CheckpointFormatError(f"tensor subclass {new_type!r} is not supported")
    return func(*args)


def _allowed_global(module: str, name: str, charge):
    """The inert stand-in for an allowed global (None: refused). ``charge(n)`` accounts for
    the ``n`` items a call builds, so repeated calls on one memoised argument stay bounded."""
    if (module, name) == ("collections", "OrderedDict"):
        def ordered_dict(*args):
            if len(args) > 1 or (args and not isinstance(args[0], (list, tuple, dict))):
                raise CheckpointFormatError("unexpected OrderedDict call in pickle")
            charge(len(args[0]) if args else 1)
            return collections.OrderedDict(*args)
        return ordered_dict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
        def rebuild(storage, storage_offset, size, stride, *rest):
            charge(1 + (len(size) if isinstance(size, tuple) else 0))
            if len(rest) > 3:
                raise CheckpointFormatError("unexpected _rebuild_tensor_v2 arguments in pickle")
            return _rebuild_tensor_v2(storage, storage_offset, size, stride)
        return rebuild
    if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        return _rebuild_parameter
    if (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):
        return _rebuild_from_type_v2
    if (module, name) == ("torch", "Tensor") or (module, name) == ("torch.nn.parameter", "Parameter"):
        return name
    if (module, name) == ("torch", "Size"):
        def size(dims=()):
            if not isinstance(dims, (list, tuple)) or len(dims) > _MAX_DIMS:
                raise CheckpointFormatError("unexpected torch.Size call in pickle")
            charge(len(dims))
            return tuple(dims)
        return size
    if (module, name) == ("_codecs", "encode"):
        def codecs_encode(obj, encoding="utf-8"):  # how protocol-2 pickles carry bytes
            if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
                raise CheckpointFormatError("unexpected _codecs.encode call in pickle")
            charge(len(obj) // 4 + 1)  # ~ the bytes it builds
            return obj.encode("latin1")
        return codecs_encode
    if module == "torch" and name in _STORAGE_DTYPES:
        return _StorageType(_STORAGE_DTYPES[name])
    if (module, name) in (("torch", "UntypedStorage"), ("torch.storage", "UntypedStorage")):
        return _StorageType("uint8")
    if module == "torch" and name in _TORCH_DTYPES:
        return _DType(canonical_dtype(name))
    return None


def _counted(op):
    def run(self):
        self.ops += 1
        if self.ops > self.max_ops:
            raise CheckpointFormatError(
                f"{self.source}: the pickle runs more than {self.max_ops} opcodes; refusing "
                "(raise PADDLELLM_MAX_PICKLE_OPS if this is a real, very large state dict)")
        op(self)
    return run


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles a torch state dict; any global outside the allow-list is refused.

    Python's pure-Python unpickler, so the memo is a dict (the C unpickler sizes an array by
    the largest memo index, which a 10-byte pickle can set to 2**32), with a bounded number
    of opcodes and of items the allowed calls build. ``BUILD`` (setting state on an object)
    is accepted on dicts only — the state dict's ``_metadata`` — and ignored.
    """

    dispatch = {code: _counted(op) for code, op in pickle._Unpickler.dispatch.items()}

    def __init__(self, file, source: str):
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storages: dict[str, StorageRef] = {}
        self.ops = 0
        self.max_ops = max_pickle_ops()
        self.built = 0

    def _charge(self, items: int) -> None:
        self.built += items
        if self.built > self.max_ops:
            raise CheckpointFormatError(f"{self.source}: the pickle builds more than "
                                        f"{self.max_ops} items; refusing")

    def find_class(self, module, name):
        obj = _allowed_global(str(module), str(name), self._charge)
        if obj is None:
            raise UnsafeCheckpointError(
                f"{self.source}: refusing to load pickled global '{module}.{name}' — a state dict "
                "only needs tensors, and executing arbitrary pickled code is unsafe. Nothing was "
                "executed. If you trust this file, re-save it as safetensors with PyTorch.")
        return obj

    def load_build(self):
        state = self.stack.pop()
        inst = self.stack[-1]
        if not (isinstance(inst, dict) and isinstance(state, dict)):
            raise CheckpointFormatError(f"{self.source}: pickle sets state on a "
                                        f"{type(inst).__name__}; a state dict never does")

    dispatch[pickle.BUILD[0]] = _counted(load_build)

    def load_ext1(self):
        raise CheckpointFormatError(f"{self.source}: pickle uses the extension registry")

    dispatch[pickle.EXT1[0]] = dispatch[pickle.EXT2[0]] = dispatch[pickle.EXT4[0]] = load_ext1

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType)):
            raise CheckpointFormatError(f"{self.source}: unsupported persistent id {_short(pid)}")
        _, stype, key, _location, numel = pid[:5]
        if len(pid) > 5 and pid[5] is not None:  # legacy storage views
            raise CheckpointFormatError(f"{self.source}: legacy storage views are not supported; "
                                        "re-save the checkpoint with a newer PyTorch")
        if not isinstance(key, (str, int)) or type(numel) is not int or numel < 0:
            raise CheckpointFormatError(f"{self.source}: malformed storage id {_short(pid)}")
        key = str(key)
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(key, stype.dtype, numel)
        return ref


def _short(obj) -> str:
    try:
        text = repr(obj)
    except (ValueError, RecursionError):  # an int too long to print, absurd nesting
        text = f"<{type(obj).__name__}>"
    return text[:200]


class _BoundedReader:
    """``read``/``readline`` over a file that never ask for more than the file holds
    (a forged length in the pickle must not allocate more than the file's size)."""

    def __init__(self, f, size: int):
        self._f, self._size = f, size

    def _left(self) -> int:
        return max(0, self._size - self._f.tell())

    def read(self, n: int = -1) -> bytes:
        n = self._left() if n is None or n < 0 else min(n, self._left())
        return self._f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        left = self._left()
        return self._f.readline(left if limit is None or limit < 0 else min(limit, left))

    def readinto(self, buf) -> int:
        return self._f.readinto(memoryview(buf)[: self._left()])


def _flatten(obj, out: dict[str, TensorRef], source: str) -> None:
    """State dict (possibly nested) -> flat ``{dotted name: TensorRef}``; non-tensors are dropped."""
    todo = [("", obj, 0)]
    while todo:
        prefix, value, depth = todo.pop()
        if isinstance(value, TensorRef):
            out[prefix] = value
        elif isinstance(value, dict):
            if depth >= _MAX_NESTING:
                raise CheckpointFormatError(f"{source}: state dict nested deeper than {_MAX_NESTING}")
            todo.extend((f"{prefix}.{k}" if prefix else str(k), v, depth + 1)
                        for k, v in reversed(list(value.items())))


def read_exact(f, n: int, path: str) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise CheckpointFormatError(f"{path}: unexpected end of file (truncated?)")
    return data


class TorchBinFile:
    """One ``torch.save`` file opened lazily: storages are mmapped when a tensor is read."""

    format = "torch"

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._file = open(self.path, "rb")
        self._size = os.fstat(self._file.fileno()).st_size
        self._zip: zipfile.ZipFile | None = None
        self._byteorder = "little"
        self.entries: dict[str, TensorRef] = {}
        try:
            if zipfile.is_zipfile(self._file):
                obj, self._locate = self._open_zip()
            else:
                obj, self._locate = self._open_legacy()
            _flatten(obj, self.entries, self.path)
        except UnsafeCheckpointError:
            self.close()
            raise
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, KeyError, ValueError,
                TypeError, IndexError, AttributeError, OverflowError, MemoryError, RecursionError,
                UnicodeDecodeError, zlib.error, NotImplementedError, OSError) as e:
            self.close()
            if isinstance(e, CheckpointFormatError):
                if str(e).startswith(self.path):
                    raise
                raise CheckpointFormatError(f"{self.path}: {e}") from None
            raise CheckpointFormatError(f"{self.path}: not a readable PyTorch checkpoint "
                                        f"({type(e).__name__}: {str(e)[:300]})") from None

    # --- zip format -------------------------------------------------------------------------
    def _read_member(self, info: zipfile.ZipInfo, what: str) -> bytes:
        """A zip member's bytes, once its declared size is known to be bounded by the file."""
        self._check_member(info, what)
        with self._zip.open(info) as fh:  # zipfile never inflates past info.file_size
            data = fh.read(info.file_size)
        if len(data) != info.file_size:
            raise CheckpointFormatError(f"{self.path}: {what} ({info.filename}) is truncated")
        return data

    def _check_member(self, info: zipfile.ZipInfo, what: str) -> None:
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size or info.header_offset + info.compress_size > self._size:
                raise CheckpointFormatError(
                    f"{self.path}: {what} ({info.filename}) declares {info.file_size} bytes, "
                    f"more than the {self._size}-byte file holds")
            return
        limit = max(max_zip_inflation() * info.compress_size, 2**20)  # small members: fine
        if info.compress_size > self._size or info.file_size > limit:
            raise CheckpointFormatError(
                f"{self.path}: {what} ({info.filename}) declares {info.file_size} bytes from "
                f"{info.compress_size} compressed (over {max_zip_inflation()}x; a zip bomb?). "
                "Raise PADDLELLM_MAX_ZIP_INFLATION if the file is trusted")

    def _open_zip(self):
        self._file.seek(0)
        zf = self._zip = zipfile.ZipFile(self._file)
        infos = {i.filename: i for i in zf.infolist()}
        pkl = [n for n in infos if n.endswith("data.pkl") and n.count("/") == 1]
        if not pkl:
            raise CheckpointFormatError(f"{self.path}: zip file without <root>/data.pkl; not a torch.save file")
        root = pkl[0][: -len("data.pkl")]
        if root + "byteorder" in infos:
            info = infos[root + "byteorder"]
            if info.file_size > 16:
                raise CheckpointFormatError(f"{self.path}: malformed {info.filename}")
            self._byteorder = self._read_member(info, "byteorder").decode("ascii").strip()
            if self._byteorder not in ("little", "big"):
                raise CheckpointFormatError(f"{self.path}: byteorder {self._byteorder!r:.20}")
        unpickler = RestrictedUnpickler(io.BytesIO(self._read_member(infos[pkl[0]], "data.pkl")),
                                        self.path)
        obj = unpickler.load()
        where: dict[str, zipfile.ZipInfo] = {}
        for key, ref in unpickler.storages.items():  # every storage fits its member
            info = infos.get(f"{root}data/{key}")
            if info is None:
                raise CheckpointFormatError(f"{self.path}: storage {key} missing from the archive")
            self._check_member(info, f"storage {key}")
            need = ref.numel * STORAGE_NUMPY[ref.dtype].itemsize
            if need > info.file_size:
                raise CheckpointFormatError(
                    f"{self.path}: storage {key} claims {ref.numel} {ref.dtype} elements "
                    f"({need} bytes) but its member holds {info.file_size} bytes")
            where[key] = info

        def locate(ref: StorageRef):
            info = where[ref.key]
            if info.compress_type != zipfile.ZIP_STORED:
                data = self._read_member(info, f"storage {ref.key}")
                return np.frombuffer(data, dtype=STORAGE_NUMPY[ref.dtype],
                                     count=ref.numel)
            local = read_at(self._file, info.header_offset, 30)
            if local[:4] != b"PK\x03\x04":
                raise CheckpointFormatError(f"{self.path}: bad zip local header for storage {ref.key}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size > self._size:
                raise CheckpointFormatError(f"{self.path}: storage {ref.key} runs past the end of the file")
            return start
        return obj, locate

    # --- legacy format ----------------------------------------------------------------------
    def _open_legacy(self):
        f = self._file
        f.seek(0)
        bounded = _BoundedReader(f, self._size)
        up = lambda: RestrictedUnpickler(bounded, self.path)  # noqa: E731
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
        if not isinstance(keys, list):
            raise CheckpointFormatError(f"{self.path}: malformed storage key list")
        offsets: dict[str, int] = {}
        for key in keys:  # each storage: int64 element count, then the bytes
            (numel,) = struct.unpack("<q", read_exact(f, 8, self.path))
            ref = main.storages.get(str(key))
            if ref is None or numel < ref.numel:
                raise CheckpointFormatError(f"{self.path}: storage {_short(key)} does not match "
                                            "the pickled state dict")
            offsets[str(key)] = f.tell()
            nbytes = numel * STORAGE_NUMPY[ref.dtype].itemsize
            if f.tell() + nbytes > self._size:
                raise CheckpointFormatError(f"{self.path}: storage {_short(key)} runs past the "
                                            "end of the file (truncated?)")
            f.seek(nbytes, os.SEEK_CUR)
        missing = set(main.storages) - set(offsets)
        if missing:
            raise CheckpointFormatError(f"{self.path}: storage {sorted(missing)[0]} is missing")
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
