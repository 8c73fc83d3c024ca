"""The ``visualdl`` logger: VisualDL records of a run's scalars (PaddlePaddle's dashboard).

Written with VisualDL's ``LogWriter`` into ``--logging_dir`` (default ``output_dir/runs``);
``visualdl --logdir OUTPUT/runs`` shows them. Tags as the ``tensorboard`` logger's
(``train/loss``, ``train/learning_rate``, ``eval/loss``, ...), as PaddleNLP's
``VisualDLCallback`` names them.

VisualDL has no purge marker, so a resumed run rewrites the records: the scalars up to the
checkpoint's step are read back with VisualDL's ``LogReader`` into a new records file and the
old files are removed; every step appears once. Install with
``pip install 'paddlellm[visualdl]'`` (VisualDL 2.5.3 installs and runs beside Paddle 3.3.1 and
protobuf 7 on Python 3.11; it pulls Flask and a Baidu cloud SDK for its web server).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Mapping

from . import logging_dir, require, scalars

#: VisualDL's record files are named ``vdlrecords.<time>.log``
RECORDS_GLOB = "vdlrecords.*.log"


class VisualDLLogger:
    """Scalars of every record through ``visualdl.LogWriter``."""

    def __init__(self, options: Any = None) -> None:
        self._visualdl = require("visualdl")
        self.writer = None
        self.directory: Path | None = None

    def on_start(self, config: Any, output_dir: str | Path) -> None:
        self.directory = logging_dir(config, output_dir)
        self._previous = sorted(self.directory.glob(RECORDS_GLOB))
        # a name of our own: VisualDL's default (seconds since the epoch) would overwrite the
        # file of a run resumed within the same second
        self.writer = self._visualdl.LogWriter(
            logdir=str(self.directory), file_name=f"vdlrecords.{time.time_ns()}.log")

    def truncate_after(self, step: int) -> None:
        """Copy the earlier records up to ``step`` into this run's file; drop the old files."""
        from visualdl import LogReader

        for path in self._previous:
            reader = LogReader(file_path=str(path))
            for tag in reader.get_tags().get("scalar", []):
                for record in reader.get_data("scalar", tag):
                    if record.id <= step:
                        self.writer.add_scalar(tag=tag, value=record.value, step=record.id,
                                               walltime=record.timestamp)
        self.writer.flush()
        for path in self._previous:
            path.unlink(missing_ok=True)
        self._previous = []

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        for tag, value in scalars(metrics):
            self.writer.add_scalar(tag=tag, value=value, step=step)

    def on_save(self, step: int) -> None:
        self.writer.flush()

    def on_end(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
