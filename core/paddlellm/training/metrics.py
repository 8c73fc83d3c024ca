"""Metrics: one JSON object per line in ``metrics.jsonl``, a progress display, phase headings
and the before/after table a run ends with (the full summary goes to ``run_summary.json``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence, TextIO


def format_record(record: dict[str, Any]) -> str:
    """``loss=2.31 lr=3.000e-04 step=10``: a metrics record as one line (floats shortened)."""
    parts = []
    for key, value in record.items():
        if isinstance(value, float):
            value = f"{value:.3e}" if key == "lr" else f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


class MetricsLogger:
    """A run's metrics: kept in :attr:`records`, shown on ``stream`` and handed to the run's
    training loggers (main process only).

    ``metrics.jsonl`` at ``path`` is the built-in ``jsonl`` logger
    (:class:`paddlellm.loggers.jsonl.JsonlLogger`, always on); ``loggers`` are the others the
    run selected (``--loggers``: :class:`paddlellm.interfaces.TrainingLogger` objects, already
    started). On a terminal a rich progress bar carries loss, lr and tokens/s; elsewhere (CI,
    logs) each record is printed as one line.
    """

    def __init__(self, path: str | Path | None, *, enabled: bool = True,
                 stream: TextIO | None = None, label: str = "train",
                 loggers: Sequence[Any] = ()) -> None:
        from ..loggers.jsonl import JsonlLogger

        self.path = Path(path) if path else None
        self.label = label
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.records: list[dict[str, Any]] = []
        self._progress = None
        self._task = None
        self.jsonl = JsonlLogger(path=self.path) if self.path else None
        if self.jsonl is not None and enabled:
            self.jsonl.on_start(None, self.path.parent)
        #: every logger records go to, ``metrics.jsonl`` first
        self.loggers: list[Any] = ([self.jsonl] if self.jsonl else []) + list(loggers) \
            if enabled else []
        self._closed = False
        self._truncated: int | None = None

    def _read(self) -> list[dict[str, Any]]:
        """The file's records; a torn last line (a run killed mid-write) is dropped."""
        return self.jsonl.records() if self.jsonl else []

    def truncate_after(self, step: int) -> None:
        """Continue the records of a run resumed from the checkpoint at ``step``: every
        logger forgets (or masks) what it had past ``step``, so each step is logged once
        across restarts."""
        from ..interfaces import TrainingLogger, member

        if self._truncated == step:  # the loop and train_and_evaluate both ask: once
            return
        self._truncated = step
        for logger in self.loggers:
            truncate = member(logger, TrainingLogger, "truncate_after")
            if truncate is not None:
                truncate(step)

    def initial_eval(self) -> dict[str, Any] | None:
        """The step-0 evaluation already in the file (a resumed run reports it as "before")."""
        for record in self._read():
            if record.get("step") == 0 and "eval_loss" in record:
                return {k: v for k, v in record.items() if k not in ("step", "time")}
        return None

    def start(self, total_steps: int, done: int = 0) -> None:
        if not self.enabled or not self.stream.isatty():
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeRemainingColumn)

        self._progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                  console=Console(file=self.stream))
        self._task = self._progress.add_task(self.label, total=total_steps, completed=done,
                                             info="")
        self._progress.start()

    def log(self, record: dict[str, Any]) -> None:
        record = {"time": round(time.time(), 3), **record}
        self.records.append(record)
        if not self.enabled:
            return
        step = int(record.get("step", 0))
        metrics = {k: v for k, v in record.items() if k != "step"}
        for logger in self.loggers:
            logger.log(step, metrics)
        shown = {k: v for k, v in record.items() if k != "time"}
        if self._progress is not None:
            if "loss" in record:
                self._progress.update(self._task, completed=record["step"], info=format_record(
                    {k: shown[k] for k in ("loss", "lr", "tokens_per_sec") if k in shown}))
            else:
                self._progress.console.print(format_record(shown))
        else:
            print(format_record(shown), file=self.stream, flush=True)

    def saved(self, step: int) -> None:
        """The checkpoint of ``step`` is written: loggers that draw or flush do it now."""
        from ..interfaces import TrainingLogger, member

        for logger in self.loggers:
            on_save = member(logger, TrainingLogger, "on_save")
            if on_save is not None:
                on_save(step)

    def finish(self) -> None:
        """The loop is done: stop the progress bar (records may still follow)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """The run is over: every logger's ``on_end`` (once)."""
        self.finish()
        if self._closed:
            return
        self._closed = True
        for logger in self.loggers:
            logger.on_end()


def print_heading(text: str, *, enabled: bool = True, stream: TextIO | None = None) -> None:
    """A phase heading (``== SFT ... ==``; a rule on a terminal)."""
    if not enabled:
        return
    stream = stream or sys.stderr
    if stream.isatty():
        from rich.console import Console

        Console(file=stream).rule(f"[bold]{text}")
    else:
        print(f"\n== {text} ==", file=stream, flush=True)


#: (summary key stem, row label) of the before/after table, in order
SUMMARY_ROWS = (
    ("eval_pref_accuracy", "preference accuracy (model scores the right answer above the "
                           "wrong one)"),
    ("exact_match", "exact match"),
    ("eval_loss", "eval loss"),
    ("eval_ppl", "eval perplexity"),
)
#: column headings of the table by stage
SUMMARY_COLUMNS = {"pretrain": ("before pretraining", "after pretraining"),
                   "sft": ("before SFT", "after SFT")}


def _cell(key: str, value: Any) -> str:
    if not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.3f}" if "loss" in key or "accuracy" in key or "exact" in key else \
        f"{value:.2f}"


def summary_table(summary: dict[str, Any]) -> str:
    """The run's before/after table as Markdown (what README.md shows), from the
    ``<metric>_before`` / ``<metric>_after`` keys of a stage's summary."""
    stage = summary.get("stage", "")
    if stage == "align":
        name = str(summary.get("align") or "alignment").upper()
        before = f"after SFT, before {name}" if summary.get("sft") else f"before {name}"
        columns = (before, f"after {name}")
    else:
        columns = SUMMARY_COLUMNS.get(stage, ("before", "after"))
    count = summary.get("eval_examples") or summary.get("eval_after", {}).get("count")
    first = f"held-out ({count} questions never seen in training)" if count else "held-out"
    lines = [f"| {first} | {columns[0]} | {columns[1]} |", "|---|---|---|"]
    for key, label in SUMMARY_ROWS:
        if f"{key}_before" in summary and f"{key}_after" in summary:
            lines.append(f"| {label} | {_cell(key, summary[key + '_before'])} | "
                         f"**{_cell(key, summary[key + '_after'])}** |")
    by_before = summary.get("exact_match_by_task_before") or \
        summary.get("eval_before", {}).get("by_task") or {}
    by_after = summary.get("exact_match_by_task_after") or \
        summary.get("eval_after", {}).get("by_task") or {}
    for task in sorted(set(by_before) & set(by_after)):
        lines.append(f"| exact match, {task} | {_cell('exact', by_before[task])} | "
                     f"{_cell('exact', by_after[task])} |")
    return "\n".join(lines) if len(lines) > 2 else ""
