"""``llm serve``: the OpenAI-compatible server (chat page at ``/``) under uvicorn."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer

_LIMIT_HELP = "(env PADDLELLM_{}; see docs/security.md)"


def _read_api_key(api_key: str | None, api_key_file: Path | None) -> str | None:
    """The key from --api_key, else --api_key_file, else $PADDLELLM_API_KEY (unset: none)."""
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
    return os.environ.get("PADDLELLM_API_KEY") or None


def serve(
    model_name_or_path: Optional[str] = typer.Option(
        None, "--model_name_or_path", help="Model directory (HF layout) or a --peft run's "
        "adapter folder; default: the bundled instruction-tuned demo model."),
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
    served_model_name: Optional[str] = typer.Option(
        None, "--served_model_name", help="Model id in the API (default: the directory name)."),
    max_queue: int = typer.Option(
        256, "--max_queue", help="Requests that may wait beyond --max_num_seqs; more get 503."),
    max_num_seqs: int = typer.Option(64, "--max_num_seqs", help="Most sequences in one batch."),
    max_model_len: Optional[int] = typer.Option(
        None, "--max_model_len", help="Context length (default: the model's)."),
    block_size: int = typer.Option(64, "--block_size", help="Tokens per KV-cache block."),
    num_blocks: Optional[int] = typer.Option(
        None, "--num_blocks", help="KV-cache blocks (default: sized from the memory budget)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, float16 or bfloat16."),
    lora_path: Optional[str] = typer.Option(None, "--lora_path", help="LoRA adapter to merge."),
    quant_type: Optional[str] = typer.Option(None, "--quant_type", help="Weight quantization."),
    max_body_bytes: Optional[int] = typer.Option(
        None, "--max_body_bytes", help="Largest request body, bytes (default 8388608) "
                                       + _LIMIT_HELP.format("MAX_BODY_BYTES")),
    body_timeout: Optional[float] = typer.Option(
        None, "--body_timeout", help="Seconds to receive a request body (default 30) "
                                     + _LIMIT_HELP.format("BODY_TIMEOUT")),
    max_json_depth: Optional[int] = typer.Option(
        None, "--max_json_depth", help="Deepest JSON nesting in a body (default 32) "
                                       + _LIMIT_HELP.format("MAX_JSON_DEPTH")),
    prompt_chars_per_token: Optional[int] = typer.Option(
        None, "--prompt_chars_per_token", help="Prompts over max_model_len x this many characters "
                                               "are refused before tokenizing (default 32) "
                                               + _LIMIT_HELP.format("PROMPT_CHARS_PER_TOKEN")),
    template_max_iterations: Optional[int] = typer.Option(
        None, "--template_max_iterations", help="Loop iterations + calls per chat-template render "
                                                "(default 1000000) "
                                                + _LIMIT_HELP.format("TEMPLATE_MAX_ITERATIONS")),
    template_max_seconds: Optional[float] = typer.Option(
        None, "--template_max_seconds", help="Seconds per chat-template render (default 5) "
                                             + _LIMIT_HELP.format("TEMPLATE_MAX_SECONDS")),
    prep_threads: Optional[int] = typer.Option(
        None, "--prep_threads", help="Worker threads that parse, render and tokenize requests "
                                     "(default 4) " + _LIMIT_HELP.format("PREP_THREADS")),
    log_level: str = typer.Option("info", "--log_level", help="uvicorn log level."),
) -> None:
    """Serve a model with the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models,
    /health, /metrics) and a chat page at /.

    Example: llm serve --port 8000   (then open http://127.0.0.1:8000/)
    """
    from ..serving import ServerLimits, create_app, run_server

    if flask_port is not None:
        if port != 8000 and port != flask_port:
            typer.echo(f"note: --flask_port {flask_port}: the API and the chat page share one "
                       f"port here; --port {port} is not used", err=True)
        port = flask_port
    key = _read_api_key(api_key, api_key_file)
    try:
        limits = ServerLimits.from_env(
            max_body_bytes=max_body_bytes, body_timeout=body_timeout, max_json_depth=max_json_depth,
            prompt_chars_per_token=prompt_chars_per_token,
            template_max_iterations=template_max_iterations,
            template_max_seconds=template_max_seconds, prep_threads=prep_threads)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    app = create_app(model_name_or_path, served_model_name=served_model_name, api_key=key,
                     max_queue=max_queue, dtype=dtype, block_size=block_size,
                     num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                     max_model_len=max_model_len, lora_path=lora_path, quant_type=quant_type,
                     limits=limits)
    typer.echo(f"serving {app.state.server.model_name} on http://{host}:{port}/ "
               f"(API at /v1{', API key required' if key else ''})", err=True)
    run_server(app, host=host, port=port, log_level=log_level)
