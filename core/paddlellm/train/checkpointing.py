"""Checkpoints in ``output_dir/checkpoint-<step>``, written atomically.

A checkpoint is written into a temporary folder and renamed into place, so a run killed
mid-save never leaves a half-written ``checkpoint-N``; only the newest ``keep`` remain.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Callable

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


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
    (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    if keep:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resume_checkpoint(config) -> Path | None:
    """The checkpoint a run resumes from: ``--resume_from_checkpoint``, or with ``--resume``
    the newest in ``output_dir`` (None when there is none yet: the run starts fresh)."""
    from ..errors import ConfigError

    if config.resume_from_checkpoint:
        path = Path(config.resume_from_checkpoint)
        if not (path / "trainer_state.json").is_file():
            raise ConfigError(f"--resume_from_checkpoint {path}: not a checkpoint folder "
                              "(no trainer_state.json)")
        return path
    if config.resume:
        found = list_checkpoints(config.output_dir)
        return found[-1] if found else None
    return None
