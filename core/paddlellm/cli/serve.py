"""``llm serve``: the OpenAI-compatible server (chat page at ``/``) under uvicorn; its engine
options are :class:`~paddlellm.engine.config.EngineConfig`'s (flags and ``PADDLELLM_*``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..engine.config import EngineConfig
from ..errors import PaddleLLMError
from .engine_options import engine_options


def _read_api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    """The key from --api_key, else --api_key_file, else $PADDLELLM_API_KEY or the file
    named by $PADDLELLM_API_KEY_FILE (unset: none)."""
    if api_key is not None and api_key_file is not None:
        raise typer.BadParameter("give --api_key or --api_key_file, not both", param_hint="--api_key_file")
    if api_key_file is not None:
        try:
            key = api_key_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise typer.BadParameter(f"cannot read {api_key_file}: {exc.strerror if isinstance(exc, OSError) else 'not UTF-8 text'}",
                                     param_hint="--api_key_file") from None
        if not key:
            raise typer.BadParameter(f"{api_key_file} is empty", param_hint="--api_key_file")
        return key
    if api_key is not None:
        return api_key or None
    from ..serving.env_app import api_key_from_env

    try:
        return api_key_from_env()
    except PaddleLLMError as exc:
        raise typer.BadParameter(str(exc), param_hint="--api_key_file") from None


@engine_options(envvar=True)
def serve(
    config: EngineConfig,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    flask_port: Optional[int] = typer.Option(
        None, "--flask_port", help="PaddleNLP's API port: the API and the chat page share one "
                                   "port here, so this wins over --port."),
    api_key: Optional[str] = typer.Option(
        None, "--api_key", help="Require 'Authorization: Bearer KEY' on /v1/* (visible in the "
                                "process list: prefer --api_key_file or $PADDLELLM_API_KEY; "
                                "unset = no key)."),
    api_key_file: Optional[Path] = typer.Option(
        None, "--api_key_file", help="Read the API key from this file (surrounding whitespace "
                                     "stripped)."),
    log_level: str = typer.Option("info", "--log_level", help="uvicorn log level."),
) -> None:
    """Serve a model with the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models,
    /health, /metrics) and a chat page at /.

    Every engine option is also read from its PADDLELLM_<NAME> variable (the flag wins).

    Example: llm serve --port 8000   (then open http://127.0.0.1:8000/)
    """
    from ..serving import create_app, run_server

    if flask_port is not None:
        if port != 8000 and port != flask_port:
            typer.echo(f"note: --flask_port {flask_port}: the API and the chat page share one "
                       f"port here; --port {port} is not used", err=True)
        port = flask_port
    key = _read_api_key(api_key, api_key_file)
    app = create_app(config=config, api_key=key)
    typer.echo(f"serving {app.state.server.model_name} on http://{host}:{port}/ "
               f"(API at /v1{', API key required' if key else ''})", err=True)
    run_server(app, host=host, port=port, log_level=log_level)
