"""``uvicorn paddlellm.serving:app``: the server configured by environment variables.

ASGI servers import an app object by name, so ``paddlellm.serving.app`` is one: on the
first ASGI event (uvicorn's lifespan startup) it builds :func:`~paddlellm.serving.create_app`
from the variables below, in a worker thread (the event loop never loads a model), and then
hands every event to it. Programs should call ``create_app(...)`` themselves.

Every :class:`~paddlellm.engine.config.EngineConfig` option is read from
``PADDLELLM_<NAME>`` (``PADDLELLM_MAX_NUM_SEQS``, ``PADDLELLM_DTYPE``, ``PADDLELLM_BLOCK_SIZE``,
...; ``PADDLELLM_MODEL`` names the model, as ``PADDLELLM_MODEL_NAME_OR_PATH`` does); the
API key from ``PADDLELLM_API_KEY`` or the file named by ``PADDLELLM_API_KEY_FILE``.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Mapping

from ..engine.config import EngineConfig
from ..errors import ConfigError


def api_key_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``PADDLELLM_API_KEY``, else the contents of ``PADDLELLM_API_KEY_FILE`` (stripped)."""
    env = os.environ if environ is None else environ
    key = env.get("PADDLELLM_API_KEY")
    if not key and env.get("PADDLELLM_API_KEY_FILE"):
        path = Path(env["PADDLELLM_API_KEY_FILE"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"PADDLELLM_API_KEY_FILE={path}: {exc.strerror}") from None
    return key or None


def options_from_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``create_app`` keyword arguments from ``PADDLELLM_*`` variables: the engine options
    that are set (validated and typed; a bad value is a ConfigError naming the variable),
    ``model_name_or_path`` (None: the demo model) and ``api_key`` when one is given."""
    options: dict[str, Any] = {"model_name_or_path": None, **EngineConfig.env_values(environ)}
    key = api_key_from_env(environ)
    if key:
        options["api_key"] = key
    return options


class EnvApp:
    """An ASGI app that builds the real one from the environment on its first event."""

    def __init__(self) -> None:
        self._app = None
        self._lock = threading.Lock()

    def _build(self):
        with self._lock:
            if self._app is None:
                from .server import create_app

                options = options_from_env()
                key = options.pop("api_key", None)
                self._app = create_app(config=EngineConfig(**options), api_key=key)
            return self._app

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            import anyio

            await anyio.to_thread.run_sync(self._build)
        await self._app(scope, receive, send)
