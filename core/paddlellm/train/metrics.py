"""Metrics: one JSON object per line in ``metrics.jsonl`` and a progress display."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO


def _fmt(record: dict[str, Any]) -> str:
    parts = []
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.3e}" if key == "lr" else f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class MetricsLogger:
    """Appends records to ``path`` and shows progress on ``stream`` (main process only).

    On a terminal a rich progress bar carries loss, lr and tokens/s; elsewhere (CI, logs)
    each record is printed as one line.
    """

    def __init__(self, path: str | Path | None, *, enabled: bool = True,
                 stream: TextIO | None = None) -> None:
        self.path = Path(path) if path else None
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.records: list[dict[str, Any]] = []
        self._progress = None
        self._task = None
        # the first record of a run that does not continue the file starts it afresh, so a
        # run restarted from scratch never appends to the records of an earlier one
        self._fresh = True
        if self.path and enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def _read(self) -> list[dict[str, Any]]:
        """The file's records; a torn last line (a run killed mid-write) is dropped."""
        out = []
        if not (self.path and self.path.is_file()):
            return out
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def truncate_after(self, step: int) -> None:
        """Continue the file of a run resumed from the checkpoint at ``step``: records past
        ``step`` are forgotten, so every step is logged once across restarts."""
        self._fresh = False
        if not (self.enabled and self.path and self.path.is_file()):
            return
        kept = [r for r in self._read() if isinstance(r.get("step", 0), int)
                and r.get("step", 0) <= step]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        tmp.replace(self.path)

    def initial_eval(self) -> dict[str, Any] | None:
        """The step-0 evaluation already in the file (a resumed run reports it as "before")."""
        for record in self._read():
            if record.get("step") == 0 and "eval_loss" in record:
                return {k: v for k, v in record.items() if k not in ("step", "time")}
        return None

    def start(self, total_steps: int, done: int = 0) -> None:
        if not self.enabled or not self.stream.isatty():
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn("train"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeRemainingColumn())
        self._task = self._progress.add_task("train", total=total_steps, completed=done, info="")
        self._progress.start()

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.records.append(record)
        if not self.enabled:
            return
        if self.path:
            mode, self._fresh = ("w" if self._fresh else "a"), False
            with self.path.open(mode, encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        shown = {k: v for k, v in record.items() if k != "time"}
        if self._progress is not None:
            if "loss" in record:
                self._progress.update(self._task, completed=record["step"], info=_fmt(
                    {k: shown[k] for k in ("loss", "lr", "tokens_per_sec") if k in shown}))
            else:
                self._progress.console.print(_fmt(shown))
        else:
            print(_fmt(shown), file=self.stream, flush=True)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
