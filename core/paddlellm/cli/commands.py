"""The core's commands: ``plugins``, ``doctor``, ``run``, ``kernels`` and ``preprocess``."""
from __future__ import annotations

import json
from typing import Optional

import typer

from ..plugin.manager import get_plugin_manager
from . import infer
from .export import export
from .options import PassThroughCommand
from .serve import serve


def add_core_commands(app: typer.Typer) -> None:
    app.command("plugins")(plugins)
    app.command("doctor")(doctor)
    app.command(
        "run",
        cls=PassThroughCommand.listing(_run_help_options, "[CONFIG.json|yaml] [OPTIONS]"),
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                          "help_option_names": ["-h", "--help"]},
    )(run)
    app.add_typer(kernels_app, name="kernels")
    app.command("preprocess")(preprocess)
    app.command("predict")(infer.predict)
    app.command("chat")(infer.chat)
    app.command("serve")(serve)
    app.command("export")(export)


def plugins(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    kind: Optional[str] = typer.Option(None, "--kind", help="Only plugins of this kind."),
    check: bool = typer.Option(False, "--check", help="Also load every plugin's target and "
                               "check it against its kind's Protocol (imports Paddle); exit 1 "
                               "when any plugin failed."),
) -> None:
    """List installed plugins (and those that failed to load). Does not import Paddle.

    A plugin that failed (import error, a misspelt hook, a registration error; with
    ``--check`` also a target missing members of its Protocol) is listed under "failed to
    load" on stderr; ``--check`` then exits 1."""
    manager = get_plugin_manager()
    registry = manager.registry
    entries = registry.entries(kind)
    failed = list(manager.failed)
    if check:
        failed += manager.check_targets(kind)
    if as_json:
        typer.echo(json.dumps([e.as_dict() for e in entries], indent=2))
        for f in failed:
            typer.echo(f"warning: plugin '{f.plugin}' from {f.distribution} failed to "
                       f"load: {f.error}", err=True)
        if check and failed:
            raise typer.Exit(1)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("kind", "name", "aliases", "distribution", "version", "description")
    for e in entries:
        table.add_row(e.kind, e.name, ", ".join(e.aliases), e.distribution, e.version,
                      e.description)
    console = Console(width=max(Console().width, 120))
    console.print(table)
    if failed:
        failures = Table("plugin", "distribution", "version", "error", title="failed to load")
        for f in failed:
            failures.add_row(f.plugin, f.distribution, f.version, f.error)
        Console(stderr=True, width=max(Console().width, 120)).print(failures)
    if check and failed:
        raise typer.Exit(1)


def doctor(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check Paddle, devices and plugins; exit non-zero when a run cannot work."""
    from ..plugin.doctor import diagnose, format_report

    report = diagnose(get_plugin_manager())
    typer.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if report["missing"]:
        raise typer.Exit(1)


def _run_help_options():
    from .run_help import run_help_options

    return run_help_options()


def run(ctx: typer.Context) -> None:
    """Train: compose model + stage + PEFT + alignment + strategy + backend, and run.

    Options come from a JSON/YAML file and --key value flags (flags win over the file). A
    plugin's keys are valid when that plugin is selected. --key-name works as --key_name.

    Example: llm run --model qwen --stage sft --data train.jsonl --max_steps 100
    """
    args = list(ctx.args)
    config = args.pop(0) if args and not args[0].startswith("--") else None
    from ..plugin.config import build_run_config, load_config_file
    from ..training.compose import run as run_job

    if config is not None:
        from ..plugin.paddlenlp_args import is_paddlenlp_config, job_of

        raw = load_config_file(config)
        if is_paddlenlp_config(raw) and job_of(raw, config) == "quantize":
            # PaddleNLP's run_quantization.py files: the quantize command runs them
            import subprocess
            import sys

            raise typer.Exit(subprocess.call([sys.executable, "-m", "paddlellm", "quantize",
                                              config, *args]))

    manager = get_plugin_manager()
    run_job(build_run_config(config, args, registry=manager.registry), manager)


def preprocess(
    input_path: str = typer.Option(..., "--input_path", help="corpus: .jsonl (one object per "
                                   "line) or text (one document per line)"),
    output_prefix: str = typer.Option(..., "--output_prefix",
                                      help="writes PREFIX.bin and PREFIX.idx"),
    model_name_or_path: str = typer.Option(..., "--model_name_or_path",
                                           help="directory with the tokenizer to use"),
    json_key: str = typer.Option("text", "--json_key", help="the text field of jsonl records"),
    append_eos: bool = typer.Option(False, "--append_eos",
                                    help="end every document with the EOS token"),
    workers: int = typer.Option(1, "--workers", min=1, help="tokenizer processes"),
) -> None:
    """Tokenize a corpus into the indexed .bin/.idx pretraining format (PaddleNLP's)."""
    from ..data.preprocess import preprocess as run_preprocess

    stats = run_preprocess(input_path, output_prefix, model_name_or_path, json_key=json_key,
                           append_eos=append_eos, workers=workers)
    typer.echo(f"wrote {stats['documents']} documents, {stats['tokens']} tokens "
               f"({stats['dtype']}) to {stats['bin']} and {stats['idx']}"
               + (f"; skipped {stats['skipped']} empty" if stats["skipped"] else ""))


kernels_app = typer.Typer(help="Kernel plugins: check a kernel against the reference.",
                          no_args_is_help=True)


def _echo_results(title: str, results) -> tuple[int, int]:
    """Print one kind's results; (supported, failed)."""
    typer.echo(title)
    failed = 0
    for r in results:
        if not r.supported:
            status = "unsupported"
        elif r.passed and r.error == "declined":
            status = "declined (the layer's own math runs)"
        elif r.passed:
            status = f"ok    rel.err {r.rel_error:.2e}"
        else:
            failed += 1
            status = f"FAIL  {r.error or f'rel.err {r.rel_error:.2e}'}"
        typer.echo(f"  {r.case:<24} {status}")
    return sum(r.supported for r in results), failed


@kernels_app.command("check")
def kernels_check(
    name: str = typer.Argument(..., help="registered attention or linear kernel name"),
    device: str = typer.Option("auto", "--device", help="backend to run on"),
    tolerance: float = typer.Option(1e-5, help="max |out - ref| / max |ref|"),
) -> None:
    """Run a kernel on every case it claims to support and compare with NumPy float64 (its
    attention kernel and its linear kernel, where NAME is registered as both)."""
    manager = get_plugin_manager()
    kinds = [k for k in ("attention_kernel", "linear_kernel") if manager.registry.has(k, name)]
    if not kinds:  # the registry's own error: names the kind and the known names
        manager.registry.get("attention_kernel", name)
    manager.select_backend(device).load().setup()
    supported = failed = 0
    distribution = ""
    for kind in kinds:
        entry = manager.registry.get(kind, name)
        distribution = entry.distribution
        if kind == "attention_kernel":
            from ..testing.attention import check_kernel

            s, f = _echo_results("attention:", check_kernel(entry.load(), tolerance))
        else:
            from ..testing.linear import check_linear_kernel

            s, f = _echo_results("linear:", check_linear_kernel(entry.load(), tolerance))
        supported, failed = supported + s, failed + f
    typer.echo(f"{name} ({distribution}): {supported - failed}/{supported} "
               f"supported cases pass")
    if failed or not supported:
        raise typer.Exit(1)
