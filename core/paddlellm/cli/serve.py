"""``llm serve``: the OpenAI-compatible server (chat page at ``/``) under uvicorn."""
from __future__ import annotations

import os
from typing import Optional

import typer


def serve(
    model_name_or_path: Optional[str] = typer.Option(
        None, "--model_name_or_path", help="Model directory (HF layout) or a --peft run's "
        "adapter folder; default: the bundled instruction-tuned demo model."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: Optional[str] = typer.Option(
        None, "--api_key", help="Require 'Authorization: Bearer KEY' on /v1/* "
                                "(default: $PADDLELLM_API_KEY; unset = no key)."),
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
    log_level: str = typer.Option("info", "--log_level", help="uvicorn log level."),
) -> None:
    """Serve a model with the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models,
    /health, /metrics) and a chat page at /.

    Example: llm serve --port 8000   (then open http://127.0.0.1:8000/)
    """
    from ..serving import create_app, run_server

    key = api_key if api_key is not None else os.environ.get("PADDLELLM_API_KEY") or None
    app = create_app(model_name_or_path, served_model_name=served_model_name, api_key=key,
                     max_queue=max_queue, dtype=dtype, block_size=block_size,
                     num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                     max_model_len=max_model_len, lora_path=lora_path, quant_type=quant_type)
    typer.echo(f"serving {app.state.server.model_name} on http://{host}:{port}/ "
               f"(API at /v1{', API key required' if key else ''})", err=True)
    run_server(app, host=host, port=port, log_level=log_level)
