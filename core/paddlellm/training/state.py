"""Optimizer and scheduler state in a checkpoint: safetensors + JSON, nothing pickled.

``optimizer.safetensors`` holds every tensor of the optimizer's ``state_dict`` (AdamW's
moments and beta powers, master weights) under flattened names; ``optimizer.json`` holds the
rest: the non-tensor values, the learning-rate scheduler's state and the map from stored
names back to the state-dict structure. Nothing in either file can execute code.

Paddle keys optimizer accumulators by generated parameter names (``linear_3.w_0_moment1_0``)
that depend on construction order; a resumed run (or another process) generates others.
We store them under the model's structural names (``model.layers.0.mlp.up_proj.weight``)
and map back on load.

Checkpoints of earlier versions kept this state in a pickled ``optimizer.pdopt``; such a
file is refused (never unpickled), with a message naming it.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..checkpoint._errors import CheckpointFormatError, CheckpointNotFoundError

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_FILE = "optimizer.json"
LEGACY_OPTIMIZER_FILE = "optimizer.pdopt"
STATE_FILE = "trainer_state.json"
FORMAT = "paddlellm.optimizer/1"
_SEP = "/"  # joins nested state-dict keys into one tensor name


def _renamer(model, to_structural: bool) -> dict[str, str]:
    pairs = [(p.name, n) for n, p in model.named_parameters()]
    return dict(pairs) if to_structural else {n: pname for pname, n in pairs}


def _rename_key(key: str, mapping: dict[str, str]) -> str:
    # accumulator keys are "<param name>_<accumulator>_<i>"; master weights are "<param name>"
    if key in mapping:
        return mapping[key]
    best = max((k for k in mapping if key.startswith(k + "_")), key=len, default=None)
    return key if best is None else mapping[best] + key[len(best):]


def _is_tensor(value: Any) -> bool:
    from ..checkpoint._paddle import is_paddle_tensor

    return is_paddle_tensor(value)


def _split_state(state: dict, mapping: dict[str, str], path: tuple[str, ...],
                 tensors: dict[str, Any]) -> dict:
    """Tensors of a (nested) state dict into ``tensors`` by flat name; returns the JSON part,
    where each tensor is replaced by ``{"tensor": flat name}``."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        key = _rename_key(str(key), mapping)
        if _is_tensor(value):
            flat = _SEP.join((*path, key))
            tensors[flat] = value
            out[key] = {"tensor": flat}
        elif isinstance(value, dict):
            out[key] = {"dict": _split_state(value, mapping, (*path, key), tensors)}
        else:
            out[key] = {"value": _jsonable(value, key)}
    return out


def _jsonable(value: Any, key: str) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        raise TypeError(f"optimizer state {key!r}: {type(value).__name__} is neither a tensor "
                        "nor JSON data") from None
    return value


def save_training_state(directory: str | Path, model, optimizer, scheduler) -> None:
    """Write ``optimizer.safetensors`` + ``optimizer.json`` into ``directory``."""
    from ..checkpoint.writer import save_state_dict

    directory = Path(directory)
    mapping = _renamer(model, to_structural=True)
    state = {k: v for k, v in optimizer.state_dict().items() if k != "LR_Scheduler"}
    tensors: dict[str, Any] = {}
    layout = _split_state(state, mapping, (), tensors)
    save_state_dict(tensors, directory, prefix="optimizer", max_shard_size=2**62,
                    metadata={"format": FORMAT})
    meta = {"format": FORMAT, "state": layout, "scheduler": scheduler.state_dict(),
            "parameter_names": {n: p for p, n in mapping.items()}}
    (directory / OPTIMIZER_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def read_optimizer_meta(directory: str | Path) -> dict:
    """``optimizer.json`` of a checkpoint, checked; a missing/old/malformed file is an error
    naming it (an old pickled ``optimizer.pdopt`` is refused, never read)."""
    directory = Path(directory)
    path = directory / OPTIMIZER_FILE
    if not path.is_file():
        legacy = directory / LEGACY_OPTIMIZER_FILE
        if legacy.exists():
            raise CheckpointFormatError(
                f"{legacy}: pickled optimizer state (written by an older paddlellm) is not "
                "loaded, because unpickling a file can execute code; resume from a checkpoint "
                f"with {OPTIMIZER_TENSORS} + {OPTIMIZER_FILE}, or start without --resume")
        raise CheckpointNotFoundError(f"{path}: missing (a checkpoint stores its optimizer "
                                      f"state in {OPTIMIZER_TENSORS} + {OPTIMIZER_FILE})")
    from ..checkpoint.reader import read_json

    meta = read_json(path)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointFormatError(f"{path}: field 'format' is {got!r}, expected {FORMAT!r}")
    for field, kind in (("state", dict), ("scheduler", dict)):
        if not isinstance(meta.get(field), kind):
            raise CheckpointFormatError(f"{path}: field '{field}' must be a JSON object")
    return meta


def _layout_tensors(layout: dict, where: str) -> list[str]:
    names = []
    for key, entry in layout.items():
        if not isinstance(entry, dict) or len(entry) != 1:
            raise CheckpointFormatError(f"{where}: field 'state.{key}' is malformed")
        (kind, value), = entry.items()
        if kind == "tensor":
            if not isinstance(value, str):
                raise CheckpointFormatError(f"{where}: field 'state.{key}.tensor' must be a string")
            names.append(value)
        elif kind == "dict":
            if not isinstance(value, dict):
                raise CheckpointFormatError(f"{where}: field 'state.{key}.dict' must be an object")
            names.extend(_layout_tensors(value, where))
        elif kind != "value":
            raise CheckpointFormatError(f"{where}: field 'state.{key}' has unknown kind {kind!r}")
    return names


def check_training_state(directory: str | Path) -> dict:
    """``optimizer.json`` of ``directory`` once its optimizer files are known to be present,
    to parse and to agree (headers only); else a
    :class:`~paddlellm.checkpoint.CheckpointError` naming the file."""
    from ..checkpoint.safetensors_io import SafetensorsFile

    directory = Path(directory)
    meta = read_optimizer_meta(directory)
    wanted = _layout_tensors(meta["state"], str(directory / OPTIMIZER_FILE))
    path = directory / OPTIMIZER_TENSORS
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: missing")
    f = SafetensorsFile(path)  # checks the header against the file size (truncation)
    try:
        missing = sorted(set(wanted) - set(f.keys()))
    finally:
        f.close()
    if missing:
        raise CheckpointFormatError(f"{path}: lacks tensors listed in {OPTIMIZER_FILE}, e.g. "
                                    f"{', '.join(missing[:3])}")
    return meta


def _rebuild(layout: dict, mapping: dict[str, str], reader) -> dict:
    out: dict[str, Any] = {}
    for key, entry in layout.items():
        (kind, value), = entry.items()
        name = _rename_key(key, mapping)
        if kind == "tensor":
            out[name] = reader.get_tensor(value)
        elif kind == "dict":
            out[name] = _rebuild(value, mapping, reader)
        else:
            out[name] = value
    return out


def load_training_state(directory: str | Path, model, optimizer, scheduler) -> dict:
    """Restore optimizer and scheduler from ``directory``; return its trainer state."""
    from ..checkpoint.reader import CheckpointReader

    directory = Path(directory)
    meta = check_training_state(directory)
    mapping = _renamer(model, to_structural=False)
    with CheckpointReader(directory / OPTIMIZER_TENSORS) as reader:
        state = _rebuild(meta["state"], mapping, reader)
    optimizer.set_state_dict(state)
    scheduler.set_state_dict(meta["scheduler"])
    return read_trainer_state(directory)


def read_trainer_state(directory: str | Path) -> dict:
    """``trainer_state.json`` of a checkpoint with its fields checked (errors name the field)."""
    from ..checkpoint.reader import read_json

    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: missing (not a checkpoint folder)")
    state = read_json(path)
    if not isinstance(state, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object")
    for field in ("step", "tokens"):
        value = state.get(field)
        if type(value) is not int or value < 0:
            raise CheckpointFormatError(f"{path}: field '{field}' must be a non-negative "
                                        f"integer, got {value!r:.60}")
    losses = state.get("losses", [])
    if not isinstance(losses, list) or not all(type(x) in (int, float) for x in losses):
        raise CheckpointFormatError(f"{path}: field 'losses' must be a list of numbers")
    return state


def fsync_tree(directory: str | os.PathLike) -> None:
    """Flush every file under ``directory`` (and the folders themselves) to disk."""
    for root, dirs, files in os.walk(directory):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(root)


def _fsync_dir(path: str | os.PathLike) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover  (platforms without directory fds)
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
