"""``CheckpointReader``: one lazy view over the weights of a checkpoint in any supported layout.

safetensors files are read through :class:`~paddlellm.checkpoint.safetensors_io.SafetensorsFile`
(mmapped one tensor at a time; bfloat16 as bits), not the ``safetensors`` library, whose
``load_file`` copies the whole file (+801 MiB for a 400 MiB file against +1.6 MiB) and whose
NumPy API cannot return bfloat16: see that module's docstring.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ._dtypes import FLOATING, STORAGE_NUMPY, WIDENED, canonical_dtype, convert_storage, widen
from ._errors import CheckpointFormatError, CheckpointNotFoundError
from .safetensors_io import SafetensorsFile
from .torch_io import TorchBinFile

# Looked for in this order: safetensors preferred, as transformers does.
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
#: largest JSON file (config, index, tokenizer config) read from a checkpoint
MAX_JSON_BYTES = 256 * 1024 * 1024


def read_json(path: str | os.PathLike) -> dict:
    """Read a JSON file; a malformed file is a :class:`CheckpointFormatError` naming it."""
    try:
        if os.path.getsize(path) > MAX_JSON_BYTES:
            raise CheckpointFormatError(f"{path}: {os.path.getsize(path)} bytes, more than a "
                                        f"JSON file of a checkpoint may have ({MAX_JSON_BYTES})")
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise CheckpointFormatError(f"{path}: invalid JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise CheckpointFormatError(f"{path}: not UTF-8 text (a binary file?): {e.reason} at "
                                    f"byte {e.start}") from None
    except RecursionError:
        raise CheckpointFormatError(f"{path}: JSON nested too deeply") from None


def shard_path(index_path: Path, fname: str) -> Path:
    """The shard ``fname`` of an index, which must stay inside the index's folder.

    Refused: absolute names, ``..``, and names whose real path (symlinks followed) leaves the
    folder — except the Hugging Face cache layout, where ``snapshots/<rev>/`` files are
    symlinks into the same repository's ``blobs/``.
    """
    folder = index_path.parent
    rel = Path(fname)
    if (not fname or rel.is_absolute() or ".." in rel.parts or "\\" in fname
            or "\x00" in fname or rel.drive):
        raise CheckpointFormatError(f"{index_path}: field 'weight_map' names shard {fname!r:.200}, "
                                    f"which is not a file name inside {folder}")
    shard = folder / rel
    real, inside = os.path.realpath(shard), os.path.realpath(folder)
    allowed = [inside]
    if folder.parent.name == "snapshots":  # <repo>/snapshots/<rev>/x -> <repo>/blobs/<sha>
        allowed.append(os.path.realpath(folder.parent.parent / "blobs"))
    if not any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in allowed):
        raise CheckpointFormatError(f"{index_path}: shard {fname!r:.200} resolves to {real}, "
                                    f"outside the checkpoint folder {folder}; refusing to read it")
    return shard


def resolve_weights(path: str | os.PathLike) -> Path:
    """The weights file (or index) of a checkpoint directory, or ``path`` itself if a file."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise CheckpointNotFoundError(f"checkpoint not found: {p} does not exist")
    for name in WEIGHT_FILES:
        if (p / name).is_file():
            return p / name
    present = sorted(f.name for f in p.iterdir() if f.name.endswith(_WEIGHT_SUFFIXES))
    hint = (f"; weight-like files present: {', '.join(present)} (pass one of them as the path)"
            if present else "; the directory holds no weight files")
    raise CheckpointNotFoundError(f"no checkpoint weights in {p}: looked for {', '.join(WEIGHT_FILES)}{hint}")


def _open_file(path: Path):
    if path.name.endswith(".safetensors"):
        return SafetensorsFile(path)
    return TorchBinFile(path)


class CheckpointReader:
    """Lazy reader over a checkpoint directory (or a single .safetensors/.bin file or index).

    Only headers / pickles are read on open; each tensor's bytes are mmapped when asked for
    and released when the returned array is freed, so reading a model tensor by tensor peaks
    at about one model in memory.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.weights_path = resolve_weights(path)
        self._files: dict[str, SafetensorsFile | TorchBinFile] = {}
        self._where: dict[str, str] = {}  # tensor name -> file name
        self.index_metadata: dict = {}
        try:
            if self.weights_path.name.endswith(".index.json"):
                self._open_index(self.weights_path)
            else:
                f = _open_file(self.weights_path)
                self._files[self.weights_path.name] = f
                self._where = {k: self.weights_path.name for k in f.keys()}
        except BaseException:
            self.close()
            raise
        first = next(iter(self._files.values()), None)
        self._format = first.format if first is not None else (
            "safetensors" if ".safetensors" in self.weights_path.name else "torch")

    def _open_index(self, index_path: Path) -> None:
        index = read_json(index_path)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise CheckpointFormatError(f"{index_path}: no 'weight_map' object")
        self.index_metadata = index.get("metadata") or {}
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
            raise CheckpointFormatError(f"{index_path}: field 'weight_map' must map tensor names "
                                        "to shard file names (strings)")
        for fname in sorted(set(weight_map.values())):  # shard order: 00001-of-, 00002-of-, ...
            shard = shard_path(index_path, fname)
            if not shard.is_file():
                raise CheckpointNotFoundError(f"{index_path} lists shard {fname}, which is missing from {index_path.parent}")
            self._files[fname] = _open_file(shard)
        for name, fname in weight_map.items():
            if name not in self._files[fname].entries:
                raise CheckpointFormatError(f"{index_path}: tensor {name!r} is mapped to {fname}, which does not contain it")
        # keys in saved order (shard by shard, file order within), not the index's sorted order
        for fname, f in self._files.items():
            self._where.update((name, fname) for name in f.entries if weight_map.get(name) == fname)

    # --- mapping-like API --------------------------------------------------------------------
    @property
    def format(self) -> str:
        """``"safetensors"`` or ``"torch"``."""
        return self._format

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def _entry(self, name: str):
        try:
            f = self._files[self._where[name]]
        except KeyError:
            raise KeyError(f"{name!r} is not in checkpoint {self.weights_path}") from None
        return f, f.entries[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)[1].shape)

    def dtype(self, name: str) -> str:
        """Stored dtype: ``"float32" | "bfloat16" | "float16" | "int8" | ...``."""
        return self._entry(name)[1].dtype

    @property
    def metadata(self) -> dict[str, str]:
        """The safetensors header ``__metadata__`` of the first file (``{}`` for torch files)."""
        first = next(iter(self._files.values()), None)
        return dict(getattr(first, "metadata", {}) or {})

    def file_of(self, name: str) -> Path:
        """The file that holds tensor ``name``."""
        return Path(self._files[self._where[name]].path)

    # --- data --------------------------------------------------------------------------------
    def get_raw(self, name: str, dtype: str | None = None) -> np.ndarray:
        """Tensor in storage form of ``dtype`` (default: as stored): bfloat16 / float8 as raw bits.

        Without a cast the array is a read-only mmapped view (copy it to write).
        """
        f, ent = self._entry(name)
        arr = f.read_storage(name)
        return arr if dtype is None else convert_storage(arr, ent.dtype, canonical_dtype(dtype))

    def get_numpy(self, name: str, dtype: str | None = None) -> np.ndarray:
        """Tensor as a NumPy array, read-only and mmapped when no conversion is needed.

        bfloat16 / float8 (no NumPy dtype) come back as float32, widened exactly;
        ``dtype`` casts (``"bfloat16"`` is refused here: use :meth:`get_tensor` or :meth:`get_raw`).
        """
        src = self.dtype(name)
        dst = canonical_dtype(dtype) if dtype is not None else ("float32" if src in WIDENED else src)
        if dst in WIDENED:
            raise ValueError(f"NumPy has no {dst}: use get_tensor(name, dtype={dst!r}) or get_raw()")
        arr = self.get_raw(name)
        if src in WIDENED:
            arr, src = widen(arr, src), "float32"
        return arr if src == dst else arr.astype(STORAGE_NUMPY[dst])

    def get_tensor(self, name: str, dtype: str | None = None, place=None):
        """Tensor as a ``paddle.Tensor``: stored dtype kept (bfloat16 / float16 included; float8
        widened to float32) unless ``dtype`` casts. float32 -> bfloat16 rounds to nearest even
        in NumPy (bit-identical to torch's ``.to(torch.bfloat16)``), never via float64."""
        from ._paddle import bits_to_paddle

        src = self.dtype(name)
        dst = canonical_dtype(dtype) if dtype is not None else src
        if src in ("float8_e4m3fn", "float8_e5m2") and dtype is None:
            dst = "float32"
        return bits_to_paddle(self.get_raw(name, dst), dst, place=place)

    def is_floating(self, name: str) -> bool:
        return self.dtype(name) in FLOATING

    # --- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __enter__(self) -> "CheckpointReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointReader({str(self.path)!r}, format={self.format!r}, tensors={len(self)})"
