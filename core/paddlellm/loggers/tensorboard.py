"""The ``tensorboard`` logger: TensorBoard event files of a run's scalars.

Written with the ``tensorboard`` package's own ``EventFileWriter`` and protocol buffers (the
writer ``torch.utils.tensorboard`` uses, without PyTorch), into ``--logging_dir`` (default
``output_dir/runs``); ``tensorboard --logdir OUTPUT/runs`` shows them. Tags follow Hugging
Face's and PaddleNLP's callbacks: ``train/loss``, ``train/learning_rate``, ``eval/loss``, ...

A resumed run writes a new event file that starts with a ``SessionLog.START`` event at the
checkpoint's step + 1: TensorBoard's readers then drop the interrupted run's events past the
checkpoint (the mechanism of ``tf.summary`` and ``purge_step``), so each step appears once.
Install with ``pip install 'paddlellm[tensorboard]'``.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from . import logging_dir, require, scalars


class TensorBoardLogger:
    """Scalars of every record as TensorBoard summaries (one event file per launch)."""

    def __init__(self, options: Any = None) -> None:
        require("tensorboard")
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self._writer_class = EventFileWriter
        self.writer = None
        self.directory: Path | None = None

    def on_start(self, config: Any, output_dir: str | Path) -> None:
        self.directory = logging_dir(config, output_dir)
        self.writer = self._writer_class(str(self.directory))

    def truncate_after(self, step: int) -> None:
        """Mask the interrupted run's events past ``step`` (a purge marker at ``step + 1``)."""
        event = self._event_pb2.Event(
            wall_time=time.time(), step=step + 1,
            session_log=self._event_pb2.SessionLog(status=self._event_pb2.SessionLog.START))
        self.writer.add_event(event)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        values = [self._summary_pb2.Summary.Value(tag=tag, simple_value=value)
                  for tag, value in scalars(metrics)]
        if values:
            self.writer.add_event(self._event_pb2.Event(
                wall_time=float(metrics.get("time") or time.time()), step=step,
                summary=self._summary_pb2.Summary(value=values)))

    def on_save(self, step: int) -> None:
        self.writer.flush()

    def on_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
