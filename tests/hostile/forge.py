"""Builds the hostile-file corpus at test time (nothing large is committed), and measures
what loading each file costs in a fresh process.

Every builder writes into a folder it is given and returns the path(s). ``python forge.py
measure CASES.json`` loads each case (``{"kind", "path"}``) in this process, resetting the
peak-RSS counter (``/proc/self/clear_refs``) before each, and prints one JSON line per case:
the error raised (type and message) and the peak RSS growth in bytes.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import zipfile
from pathlib import Path

# --- pickles ---------------------------------------------------------------------------------


def _str(s: str) -> bytes:  # SHORT_BINUNICODE
    b = s.encode()
    return b"\x8c" + bytes([len(b)]) + b


def exec_payload(marker: Path) -> bytes:
    """Protocol-4 pickle calling builtins.exec to create ``marker``."""
    code = f"open({str(marker)!r}, 'w').write('pwned')"
    return (b"\x80\x04" + _str("builtins") + _str("exec") + b"\x93"
            + b"X" + struct.pack("<I", len(code)) + code.encode() + b"\x85R.")


def system_payload(marker: Path) -> bytes:
    """Protocol-2 pickle: an OrderedDict state dict whose value is ``os.system('touch …')``."""
    cmd = f"touch {marker}".encode()
    return (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00a"
            + b"cos\nsystem\nX" + struct.pack("<I", len(cmd)) + cmd + b"\x85Ru.")


def torch_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None,
              compress: int = zipfile.ZIP_STORED) -> Path:
    """A ``torch.save``-shaped zip: ``archive/data.pkl`` + ``archive/data/<key>``."""
    with zipfile.ZipFile(path, "w", compression=compress) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/byteorder", "little")
        for key, data in (storages or {}).items():
            zf.writestr(f"archive/data/{key}", data)
        zf.writestr("archive/version", "3\n")
    return path


def zip_bomb_bin(path: Path, inflated: int = 64 * 2**20) -> Path:
    """``data.pkl`` of ``inflated`` bytes (a valid pickle: one long bytes object) deflated to
    ~1/1000."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("archive/data.pkl", "w", force_zip64=True) as fh:
            fh.write(b"\x80\x02\x8e" + struct.pack("<Q", inflated - 12))  # BINBYTES8
            chunk = b"\0" * 2**22
            left = inflated - 12
            while left > 0:
                fh.write(chunk[:min(left, len(chunk))])
                left -= len(chunk)
            fh.write(b".")
        zf.writestr("archive/byteorder", "little")
    return path


def memo_bomb_bin(path: Path) -> Path:
    """A 12-byte pickle that memoises at index 2**28: the C unpickler sizes an array of 2**29
    pointers (4 GiB) for it."""
    return torch_zip(path, b"\x80\x02}r" + struct.pack("<I", 2**28) + b".")


def op_flood_bin(path: Path, n: int = 200_000) -> Path:
    """``n`` EMPTY_LIST opcodes: one object per byte."""
    return torch_zip(path, b"\x80\x02" + b"]" * n + b"0" * n + b"}.")


def encode_amplifier_bin(path: Path, copies: int = 4000) -> Path:
    """One 64 KiB string, memoised, then ``copies`` calls of ``_codecs.encode`` on it: each
    call would build a fresh 64 KiB bytes object (256 MiB from a 100 KiB file)."""
    text = "a" * 2**16
    body = (b"\x80\x02c_codecs\nencode\nq\x00" + b"X" + struct.pack("<I", len(text))
            + text.encode() + b"q\x01" + b"]q\x02")
    call = b"h\x00h\x01X\x06\x00\x00\x00latin1\x86Ra"  # GET encode, GET text, TUPLE2, REDUCE, APPEND
    return torch_zip(path, body + call * copies + b"0}.")


def _tensor_pickle(numel: int, size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """``{"w": _rebuild_tensor_v2(storage('0', FloatStorage, numel), 0, size, stride)}``."""
    def tup(xs):
        return b"(" + b"".join(b"J" + struct.pack("<i", x) if -2**31 <= x < 2**31
                               else b"\x8a\x08" + struct.pack("<q", x) for x in xs) + b"t"
    pid = (b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
           + b"\x8a\x08" + struct.pack("<q", numel) + b"tQ")
    return (b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(" + pid
            + b"K\x00" + tup(size) + tup(stride) + b"\x89ccollections\nOrderedDict\n)RtRs.")


def forged_storage_bin(path: Path) -> Path:
    """A storage that claims 2**40 float32 elements; its member holds 16 bytes."""
    return torch_zip(path, _tensor_pickle(2**40, (2**20, 2**20), (2**20, 1)), {"0": b"\0" * 16})


def stride_zero_bin(path: Path) -> Path:
    """A 1-element storage viewed as 2**31 x 2**31 (stride 0): a contiguous copy is 16 EiB."""
    return torch_zip(path, _tensor_pickle(1, (2**31, 2**31), (0, 0)), {"0": b"\0" * 4})


# --- safetensors -----------------------------------------------------------------------------


def safetensors_raw(path: Path, header: bytes, data: bytes = b"", length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header + data)
    return path


def safetensors_header(path: Path, entries: dict, data: bytes = b"") -> Path:
    return safetensors_raw(path, json.dumps(entries).encode(), data)


def forged_safetensors(folder: Path) -> dict[str, Path]:
    """One file per header forgery, each with 64 real data bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    data = b"\0" * 64
    t = lambda shape, offsets, dtype="F32": {"w": {"dtype": dtype, "shape": shape,  # noqa: E731
                                                   "data_offsets": offsets}}
    return {
        # 2**32 * 2**32 * 4 bytes wraps to 0 in int64
        "shape_2^32": safetensors_header(folder / "shape_2^32.safetensors", t([2**32, 2**32], [0, 0]), data),
        "shape_negative": safetensors_header(folder / "shape_negative.safetensors", t([-2, -2], [0, 16]), data),
        "offsets_past_end": safetensors_header(folder / "offsets_past_end.safetensors",
                                               t([2**30], [0, 2**32]), data),
        "offsets_strings": safetensors_header(folder / "offsets_strings.safetensors",
                                              t([4], ["0", "16"]), data),
        "deep_json": safetensors_raw(folder / "deep_json.safetensors",
                                     b"[" * 100_000 + b"]" * 100_000, data),
        "huge_header_length": safetensors_raw(folder / "huge_header_length.safetensors", b"{}", data,
                                              length=2**63),
        "metadata_not_strings": safetensors_header(folder / "metadata_not_strings.safetensors",
                                                   {"__metadata__": {"a": [1] * 10}}, data),
    }


# --- checkpoints -----------------------------------------------------------------------------


def copy_checkpoint(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def with_config(src: Path, dst: Path, **changes) -> Path:
    """A copy of checkpoint ``src`` whose ``config.json`` has ``changes``."""
    copy_checkpoint(src, dst)
    config = json.loads((dst / "config.json").read_text())
    config.update(changes)
    (dst / "config.json").write_text(json.dumps(config))
    return dst


def escaping_index(folder: Path, shard_name: str, outside: Path | None = None) -> Path:
    """A checkpoint folder whose ``model.safetensors.index.json`` maps a tensor to ``shard_name``;
    with ``outside``, a real safetensors file there (what an escape would load)."""
    folder.mkdir(parents=True)
    if outside is not None:
        safetensors_header(outside, {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                           b"\0" * 8)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"w": shard_name}}))
    return folder


def hf_cache_layout(root: Path) -> Path:
    """``models--x--y/snapshots/<rev>/`` whose files are symlinks into ``../../blobs/``."""
    repo = root / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / "0123abc"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    safetensors_header(blobs / "aaa", {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
                       b"\0" * 8)
    (blobs / "bbb").write_text(json.dumps({"metadata": {}, "weight_map": {"w": "model-00001-of-00001.safetensors"}}))
    os.symlink("../../blobs/aaa", snap / "model-00001-of-00001.safetensors")
    os.symlink("../../blobs/bbb", snap / "model.safetensors.index.json")
    return snap


def legacy_optimizer(checkpoint: Path, marker: Path) -> Path:
    """Turn ``checkpoint`` into one of the old layout whose ``optimizer.pdopt`` pickles
    ``os.system('touch marker')``."""
    for name in ("optimizer.safetensors", "optimizer.json"):
        (checkpoint / name).unlink()
    (checkpoint / "optimizer.pdopt").write_bytes(system_payload(marker))
    return checkpoint


def binary_file(path: Path, size: int = 4096) -> Path:
    """Bytes that are not UTF-8 (what a user gets pointing ``--data`` at a model file)."""
    path.write_bytes(bytes(range(128, 256)) * (size // 128))
    return path


# --- measuring ---------------------------------------------------------------------------------


def _status(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(key + r":\s+(\d+) kB", text).group(1)) * 1024


def _load(kind: str, path: str) -> None:
    if kind == "reader":
        from paddlellm.checkpoint import CheckpointReader

        with CheckpointReader(path) as reader:
            for name in reader.keys():
                reader.get_raw(name)
    elif kind == "auto":
        from paddlellm.modeling.auto import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(path)
    else:
        raise ValueError(kind)


def measure(cases: list[dict], warm: str | None) -> None:
    if warm:  # imports and first-use costs are not the hostile file's
        _load("auto", warm)
    for case in cases:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM)
        base = _status("VmRSS")
        error = None
        try:
            _load(case["kind"], case["path"])
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            error = {"type": type(exc).__name__, "mro": [c.__name__ for c in type(exc).__mro__],
                     "message": str(exc)[:2000]}
        print(json.dumps({"path": case["path"], "error": error,
                          "peak_growth": _status("VmHWM") - base}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "measure":
        spec = json.loads(Path(sys.argv[2]).read_text())
        measure(spec["cases"], spec.get("warm"))
