"""``llm launch``: start an ``llm`` command in N processes with ``paddle.distributed.launch``.

    llm launch --nproc_per_node 2 -- run --strategy data_parallel --max_steps 100

is ``python -m paddle.distributed.launch --nproc_per_node 2 --max_restart 0 <llm> run ...``
(Paddle's launcher restarts failed workers 3 times by default; here a failure ends the job).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

ENTRY = Path(__file__).with_name("_llm_entry.py")


def launch_command(nproc_per_node: int, args: list[str], *, log_dir: str | None = None,
                   devices: str | None = None, max_restart: int = 0) -> list[str]:
    """The launcher command line that runs ``llm ARGS`` in ``nproc_per_node`` processes."""
    cmd = [sys.executable, "-m", "paddle.distributed.launch",
           "--nproc_per_node", str(nproc_per_node), "--max_restart", str(max_restart)]
    if log_dir:
        cmd += ["--log_dir", log_dir]
    if devices:
        cmd += ["--devices", devices]
    return cmd + [str(ENTRY), *args]


def add_launch_command(app: typer.Typer) -> None:
    @app.command("launch", context_settings={"allow_extra_args": True,
                                             "ignore_unknown_options": True})
    def launch(
        ctx: typer.Context,
        nproc_per_node: int = typer.Option(..., "--nproc_per_node", min=1,
                                           help="processes to start (one per device)"),
        log_dir: str = typer.Option(None, "--log_dir", help="per-process logs (workerlog.N)"),
        devices: str = typer.Option(None, "--devices", help="GPU ids to use, e.g. 0,1"),
        max_restart: int = typer.Option(0, "--max_restart", min=0,
                                        help="restarts of failed workers (Paddle's default is 3)"),
    ) -> None:
        """Run an llm command in N processes: llm launch --nproc_per_node 2 -- run --strategy data_parallel ..."""
        args = [a for a in ctx.args if a != "--"] if ctx.args[:1] == ["--"] else list(ctx.args)
        if not args:
            raise typer.BadParameter("name the llm command to launch, e.g. -- run --strategy "
                                     "data_parallel ...")
        cmd = launch_command(nproc_per_node, args, log_dir=log_dir, devices=devices,
                             max_restart=max_restart)
        sys.stdout.flush()
        os.execv(cmd[0], cmd)
