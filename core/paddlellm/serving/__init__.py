"""OpenAI-compatible serving: a starlette app (``app.py``) over an engine client
(``async_engine.py``) that drives :class:`paddlellm.engine.LLMEngine` in one thread.

``llm serve`` runs it under uvicorn; :func:`create_app` builds it in Python::

    from paddlellm.serving import create_app
    app = create_app("path/to/model", api_key="secret")   # any ASGI server can run it

``uvicorn paddlellm.serving:app`` serves the model named by ``PADDLELLM_MODEL`` (and the
other ``PADDLELLM_*`` variables of :mod:`paddlellm.serving.env_app`).
"""
from __future__ import annotations

from .app import build_app
from .async_engine import AsyncEngine, EngineDeadError, NeverAdmittedError, QueueFullError
from .env_app import EnvApp
from .limits import ServerLimits
from .server import create_app, run_server

#: ``uvicorn paddlellm.serving:app`` (configured by environment variables; this name shadows
#: the ``app`` submodule as an attribute — import that module as ``paddlellm.serving.app``)
app = EnvApp()

__all__ = ["AsyncEngine", "EngineDeadError", "EnvApp", "NeverAdmittedError", "QueueFullError",
           "ServerLimits", "app", "build_app", "create_app", "run_server"]
