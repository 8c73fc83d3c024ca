"""The ``plot`` logger: ``output_dir/loss.png``, the curves of a run at a glance.

Two panels drawn with matplotlib's Agg renderer (no display needed): train loss (``loss``) and
held-out loss (``eval_loss``) by step, and the learning rate (``lr``) by step. The picture is
redrawn at every checkpoint (``--save_steps``) and when the run ends, written to a temporary
file and renamed, so ``loss.png`` is always a whole PNG. A resumed run reads the curves it
continues back from ``output_dir/metrics.jsonl`` (the always-on ``jsonl`` logger) up to the
checkpoint's step. Install with ``pip install 'paddlellm[plot]'``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from . import require
from .jsonl import read_records

#: metric key -> (panel, label) drawn; panel 0: losses, panel 1: learning rate
CURVES = {"loss": (0, "train loss"), "eval_loss": (0, "eval loss"), "lr": (1, "learning rate")}
FILE_NAME = "loss.png"


class PlotLogger:
    """Keeps the loss and learning-rate points of the run and draws them into ``loss.png``."""

    def __init__(self, options: Any = None) -> None:
        require("plot", "matplotlib")
        self.points: dict[str, dict[int, float]] = {key: {} for key in CURVES}
        self.path: Path | None = None
        self.output_dir: Path | None = None

    def on_start(self, config: Any, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.output_dir / FILE_NAME

    def truncate_after(self, step: int) -> None:
        """Continue the curves of the interrupted run up to ``step`` (from metrics.jsonl)."""
        for record in read_records(self.output_dir / "metrics.jsonl"):
            record_step = record.get("step")
            if isinstance(record_step, int) and record_step <= step:
                self.log(record_step, record)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key in CURVES:
            value = metrics.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.points[key][step] = float(value)

    def on_save(self, step: int) -> None:
        self.draw()

    def on_end(self) -> None:
        self.draw()

    def draw(self) -> Path | None:
        """Write ``loss.png`` (nothing before the first point); returns its path."""
        if not any(self.points.values()):
            return None
        # a Figure without pyplot renders PNG through the Agg canvas: no display, no global
        # backend switch, no figure left open
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 6), dpi=100, layout="constrained")
        axes = figure.subplots(2, 1, sharex=True)
        for key, (panel, label) in CURVES.items():
            points = sorted(self.points[key].items())
            if points:
                steps, values = zip(*points)
                axes[panel].plot(steps, values, marker="o" if len(points) < 30 else None,
                                 markersize=3, label=label)
        axes[0].set_ylabel("loss")
        axes[0].set_title(f"{self.output_dir.name}: loss")
        axes[1].set_ylabel("learning rate")
        axes[1].set_xlabel("optimizer step")
        axes[1].ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        for ax in axes:
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend()
        tmp = self.path.with_name(f".{FILE_NAME}.tmp")
        figure.savefig(tmp, format="png")
        tmp.replace(self.path)
        return self.path
