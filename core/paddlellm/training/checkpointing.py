"""Checkpoints in ``output_dir/checkpoint-<step>``, written atomically and checked on resume.

A checkpoint is written into a temporary folder, flushed to disk (``fsync``) and renamed
into place, so a run killed mid-save (or a machine that loses power) never leaves a
half-written ``checkpoint-N``; only the newest ``keep`` remain. ``--resume`` checks a
checkpoint before using it (trainer state fields, optimizer files, model weights and
tokenizer present with readable headers) and falls back to the newest valid one, saying
which one it skipped and why.
"""
from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

from .state import STATE_FILE, _fsync_dir, check_training_state, fsync_tree, read_trainer_state

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
#: the files of a model checkpoint (full model) / an adapter checkpoint (PEFT)
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Completed checkpoints, oldest first."""
    root = Path(output_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def save_checkpoint(output_dir: str | Path, step: int, write: Callable[[str], None],
                    trainer_state: dict, keep: int | None = None) -> Path:
    """``write(tmp_dir)`` fills a temporary folder that becomes ``checkpoint-<step>``."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{step}"
    tmp = root / f".tmp-checkpoint-{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(str(tmp))
    (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2))
    fsync_tree(tmp)  # the data is on disk before the rename publishes it
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    _fsync_dir(root)
    if keep:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def check_checkpoint(path: str | Path) -> dict:
    """The trainer state of checkpoint ``path`` once it is known to be complete; else a
    :class:`~paddlellm.errors.PaddleLLMError` naming the file and what is wrong with it."""
    from ..checkpoint._errors import CheckpointFormatError, CheckpointNotFoundError
    from ..checkpoint.reader import CheckpointReader

    path = Path(path)
    state = read_trainer_state(path)
    check_training_state(path)
    weights = [n for n in (*MODEL_WEIGHTS, *ADAPTER_WEIGHTS) if (path / n).is_file()]
    if not weights:
        raise CheckpointNotFoundError(f"{path}: no model weights ({', '.join(MODEL_WEIGHTS)} "
                                      f"or {ADAPTER_WEIGHTS[0]})")
    with CheckpointReader(path / weights[0]):  # headers of every shard, against file sizes
        pass
    if weights[0] in MODEL_WEIGHTS and not (path / "config.json").is_file():
        raise CheckpointNotFoundError(f"{path / 'config.json'}: missing")
    if weights[0] in ADAPTER_WEIGHTS and not (path / "adapter_config.json").is_file():
        raise CheckpointNotFoundError(f"{path / 'adapter_config.json'}: missing")
    # a tokenizer that follows its checkpoint's own code (ChatGLM's) is saved as its SentencePiece file
    spm_saved = any((path / n).is_file() for n in ("tokenizer.model", "ice_text.model"))
    missing = [n for n in TOKENIZER_FILES if not (path / n).is_file()
               and not (n == "tokenizer.json" and spm_saved)]
    if missing:
        raise CheckpointNotFoundError(f"{path / missing[0]}: missing (the tokenizer is saved "
                                      "with every checkpoint)")
    for name in (*TOKENIZER_FILES, "config.json", "adapter_config.json"):
        if (path / name).is_file():
            from ..checkpoint.reader import read_json

            if not isinstance(read_json(path / name), dict):
                raise CheckpointFormatError(f"{path / name}: expected a JSON object")
    return state


def resume_checkpoint(config, log=None) -> Path | None:
    """The checkpoint a run resumes from: ``--resume_from_checkpoint`` (checked; an invalid
    one is an error), or with ``--resume`` the newest valid one in ``output_dir`` (invalid
    newer ones are skipped with a message on ``log``, stderr by default; None when there is
    none yet: the run starts fresh)."""
    from ..errors import ConfigError, PaddleLLMError

    if config.resume_from_checkpoint:
        path = Path(config.resume_from_checkpoint)
        if not (path / STATE_FILE).is_file():
            raise ConfigError(f"--resume_from_checkpoint {path}: not a checkpoint folder "
                              f"(no {STATE_FILE})")
        try:
            check_checkpoint(path)
        except PaddleLLMError as exc:
            raise ConfigError(f"--resume_from_checkpoint {path}: unusable checkpoint: {exc}") from None
        return path
    if config.resume:
        for path in reversed(list_checkpoints(config.output_dir)):
            try:
                check_checkpoint(path)
            except PaddleLLMError as exc:
                print(f"warning: --resume: skipping {path}: {exc}", file=log or sys.stderr,
                      flush=True)
                continue
            return path
    return None
