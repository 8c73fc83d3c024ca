"""Load a model into an engine and serve it: :func:`create_app`, :func:`run_server`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..engine.config import EngineConfig
from .app import build_app
from .async_engine import AsyncEngine
from .limits import ServerLimits

logger = logging.getLogger(__name__)


def create_app(model_name_or_path: str | None = None, *, config: EngineConfig | None = None,
               api_key: str | None = None, limits: ServerLimits | None = None,
               **options: Any):
    """An ASGI app serving the model of ``config`` (one :class:`EngineConfig`, used as it
    is). Without ``config`` one is built from the ``PADDLELLM_*`` variables, then
    ``model_name_or_path`` (the bundled demo model when neither names one) and the keyword
    ``options`` (any ``EngineConfig`` field: ``max_queue=32``, ``dtype="bfloat16"``...).
    ``limits`` replaces the config's request bounds; ``api_key`` requires
    ``Authorization: Bearer <key>`` on ``/v1/*``. The adapters of ``lora_modules`` are served
    beside the base: a request's ``model`` picks one."""
    from ..engine import LLMEngine, default_model_path

    if config is None:
        config = EngineConfig.from_env(model_name_or_path=model_name_or_path, **options)
    else:
        if model_name_or_path is not None:
            options["model_name_or_path"] = model_name_or_path
        config = EngineConfig.build(config, **options)
    engine = LLMEngine.from_config(config)
    path = config.model_name_or_path or str(default_model_path())
    name = config.served_model_name or engine.model_name
    aliases = tuple({str(path), Path(path).name} - {name})
    client = AsyncEngine(engine, max_queue=config.max_queue)
    return build_app(client, model_name=name, aliases=aliases, api_key=api_key,
                     limits=limits if limits is not None else ServerLimits.from_config(config),
                     root=str(path))


def run_server(app, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve ``app`` with uvicorn until interrupted (unparsable requests are answered in
    OpenAI's error shape: :class:`~paddlellm.serving.http.OpenAIErrorH11Protocol`)."""
    import uvicorn

    from .http import OpenAIErrorH11Protocol

    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5,
                http=OpenAIErrorH11Protocol)
