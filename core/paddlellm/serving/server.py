"""Load a model into an engine and serve it: :func:`create_app`, :func:`run_server`."""
from __future__ import annotations

import logging
from pathlib import Path

from .app import build_app
from .async_engine import AsyncEngine
from .limits import ServerLimits

logger = logging.getLogger(__name__)


def create_app(model_name_or_path: str | None = None, *, served_model_name: str | None = None,
               api_key: str | None = None, max_queue: int = 256, dtype: str = "float32",
               block_size: int = 64, num_blocks: int | None = None, max_num_seqs: int = 64,
               max_model_len: int | None = None, lora_path: str | None = None,
               quant_type: str | None = None, limits: ServerLimits | None = None):
    """An ASGI app serving ``model_name_or_path`` (the bundled demo model when ``None``);
    ``limits``: request bounds (default: :meth:`ServerLimits.from_env`)."""
    from ..engine import LLMEngine, SamplingParams

    if model_name_or_path is None:
        from ..engine import default_model_path

        model_name_or_path = str(default_model_path())
    engine = LLMEngine.from_pretrained(
        model_name_or_path, dtype=dtype, block_size=block_size, num_blocks=num_blocks,
        max_num_seqs=max_num_seqs, max_model_len=max_model_len, lora_path=lora_path,
        quant_type=quant_type)
    name = served_model_name or getattr(engine, "model_name", None) or Path(model_name_or_path).name
    aliases = tuple({str(model_name_or_path), Path(model_name_or_path).name} - {name})
    client = AsyncEngine(engine, max_num_seqs=max_num_seqs, max_queue=max_queue)
    return build_app(client, model_name=name, aliases=aliases, api_key=api_key,
                     sampling_params_cls=SamplingParams, limits=limits)


def run_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (unparsable requests are answered in
    OpenAI's error shape: :class:`~paddlellm.serving.http.OpenAIErrorH11Protocol`)."""
    import uvicorn

    from .http import OpenAIErrorH11Protocol

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                http=OpenAIErrorH11Protocol)
