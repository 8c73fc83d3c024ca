"""The ``jsonl`` logger: ``output_dir/metrics.jsonl``, one JSON object per record (always on).

Each line is ``{"time": ..., "step": ..., **metrics}``. A run that starts afresh rewrites the
file; a resumed run (:meth:`JsonlLogger.truncate_after`) keeps the records up to its
checkpoint's step and appends, so every step is logged once across restarts.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics file; a torn last line (a run killed mid-write) is dropped."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


class JsonlLogger:
    """Appends records to ``path`` (default: ``output_dir/metrics.jsonl`` at :meth:`on_start`)."""

    def __init__(self, options: Any = None, *, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        # the first record of a run that does not continue the file starts it afresh, so a
        # run restarted from scratch never appends to the records of an earlier one
        self._fresh = True

    def on_start(self, config: Any, output_dir: str | Path) -> None:
        if self.path is None:
            self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def records(self) -> list[dict[str, Any]]:
        return read_records(self.path) if self.path else []

    def truncate_after(self, step: int) -> None:
        """Continue the file of a run resumed from the checkpoint at ``step``: records past
        ``step`` are forgotten."""
        self._fresh = False
        if not (self.path and self.path.is_file()):
            return
        kept = [r for r in self.records() if isinstance(r.get("step", 0), int)
                and r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        record = {"time": metrics.get("time", round(time.time(), 3)), "step": step,
                  **{k: v for k, v in metrics.items() if k not in ("time", "step")}}
        mode, self._fresh = ("w" if self._fresh else "a"), False
        with self.path.open(mode, encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")

    def on_end(self) -> None:
        """Nothing to flush: every record is written when it is logged."""
