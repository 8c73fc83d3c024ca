"""OpenAI-compatible serving: a starlette app (``app.py``) over an engine client
(``async_engine.py``) that drives :class:`paddlellm.engine.LLMEngine` in one thread.

``llm serve`` runs it under uvicorn; :func:`create_app` builds it in Python::

    from paddlellm.serving import create_app
    app = create_app("path/to/model", api_key="secret")   # any ASGI server can run it
"""
from __future__ import annotations

from .app import build_app
from .async_engine import AsyncEngine, EngineDeadError, NeverAdmittedError, QueueFullError
from .limits import ServerLimits
from .server import create_app, run_server

__all__ = ["AsyncEngine", "EngineDeadError", "NeverAdmittedError", "QueueFullError",
           "ServerLimits", "build_app", "create_app", "run_server"]
