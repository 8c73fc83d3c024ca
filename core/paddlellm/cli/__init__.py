"""The ``llm`` (alias ``paddlellm``) command line: a typer app that plugins extend.

Building the app loads the plugins' entry points (light modules) but never Paddle; each
command imports what it needs when it runs.
"""
from __future__ import annotations

import sys

import typer

from ..errors import PaddleLLMError
from ..plugin.manager import PluginManager, get_plugin_manager
from .options import SpellingGroup

HELP = (
    "paddlellm: pretrain, fine-tune, align, merge, quantize and serve LLMs on PaddlePaddle. "
    "Every part is a plugin: `llm plugins` lists what is installed."
)


def _version_callback(value: bool) -> None:
    if value:
        from ..version import __version__

        typer.echo(f"paddlellm {__version__}")
        raise typer.Exit()


def build_app(manager: PluginManager | None = None) -> typer.Typer:
    """The root app with the commands of every loaded plugin (core included)."""
    manager = manager or get_plugin_manager()
    app = typer.Typer(
        cls=SpellingGroup,  # --model_name_or_path and --model-name-or-path, everywhere
        name="llm",
        help=HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", callback=_version_callback,
                                     is_eager=True, help="Print the version and exit."),
    ) -> None:
        """paddlellm command line."""

    manager.hook.register_commands(app=app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point for ``llm`` and ``paddlellm``."""
    try:
        app = build_app()
        app(args=argv, prog_name="llm", standalone_mode=True)
    except PaddleLLMError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
