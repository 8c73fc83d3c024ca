"""The core's commands: ``plugins``, ``doctor`` and ``run``."""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..plugins import get_plugin_manager


def add_core_commands(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("doctor")(doctor)
    app.command(
        "run",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": ["-h", "--help"]},
    )(run)
    app.add_typer(kernels_app, name="kernels")


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only plugins of this kind."),
) -> None:
    """List installed plugins (and those that failed to load). Does not import Paddle."""
    manager = get_plugin_manager()
    registry = manager.registry
    entries = registry.entries(kind)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        if manager.failed:
            for f in manager.failed:
                typer.echo(f"warning: plugin '{f.plugin}' from {f.distribution} failed to "
                           f"load: {f.error}", err=True)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "aliases", "distribution", "version", "description")
    for e in entries:
        table.add_row(e.kind, e.name, ", ".join(e.aliases), e.distribution, e.version,
                      e.description)
    console = Console(width=max(Console().width, 120))
    console.print(table)
    if manager.failed:
        failed = Table("plugin", "distribution", "version", "error", title="failed to load")
        for f in manager.failed:
            failed.add_row(f.plugin, f.distribution, f.version, f.error)
        Console(stderr=True, width=max(Console().width, 120)).print(failed)


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check Paddle, devices and plugins; exit non-zero when a run cannot work."""
    from ..doctor import diagnose, format_report

    report = diagnose(get_plugin_manager())
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if report["missing"]:
        raise typer.Exit(1)


def run(ctx: typer.Context) -> None:
    """Train: compose model + stage + PEFT + alignment + strategy + backend, and run.

    Usage: llm run [CONFIG.json|yaml] [--key value ...]   (flags win over the file)

    Example: llm run --model qwen --stage sft --data train.jsonl --max_steps 100
    """
    args = list(ctx.args)
    config = args.pop(0) if args and not args[0].startswith("--") else None
    from ..config import build_run_config
    from ..run import run as run_job

    manager = get_plugin_manager()
    run_job(build_run_config(config, args, registry=manager.registry), manager)


kernels_app = typer.Typer(help="Attention kernels: check a kernel plugin against the reference.",
                          no_args_is_help=True)


@kernels_app.command("check")
def kernels_check(
    name: str = typer.Argument(..., help="registered attention kernel name"),
    device: str = typer.Option("auto", "--device", help="backend to run on"),
    tolerance: float = typer.Option(1e-5, help="max |out - ref| / max |ref|"),
) -> None:
    """Run a kernel on every case it claims to support and compare with NumPy float64."""
    from ..testing.attention import check_kernel

    manager = get_plugin_manager()
    entry = manager.registry.get("attention_kernel", name)
    manager.select_backend(device).load().setup()
    results = check_kernel(entry.load(), tolerance)
    failed = 0
    for r in results:
        if not r.supported:
            status = "unsupported"
        elif r.passed:
            status = f"ok    rel.err {r.rel_error:.2e}"
        else:
            failed += 1
            status = f"FAIL  {r.error or f'rel.err {r.rel_error:.2e}'}"
        typer.echo(f"{r.case:<20} {status}")
    supported = sum(r.supported for r in results)
    typer.echo(f"{entry.name} ({entry.distribution}): {supported - failed}/{supported} "
               f"supported cases pass")
    if failed or not supported:
        raise typer.Exit(1)
