"""``uvicorn paddlellm.serving:app``: the server configured by environment variables.

ASGI servers import an app object by name, so ``paddlellm.serving.app`` is one: on the
first ASGI event (uvicorn's lifespan startup) it builds :func:`~paddlellm.serving.create_app`
from the variables below, in a worker thread (the event loop never loads a model), and then
hands every event to it. Programs should call ``create_app(...)`` themselves.

=============================  ============================================================
``PADDLELLM_MODEL``            checkpoint folder or hub id (default: the bundled demo model)
``PADDLELLM_SERVED_MODEL_NAME`` the name clients use (default: the folder's name)
``PADDLELLM_API_KEY``          require ``Authorization: Bearer <key>``
``PADDLELLM_API_KEY_FILE``     ... or read the key from this file
``PADDLELLM_DTYPE``            ``float32`` (default), ``bfloat16``, ``float16``
``PADDLELLM_MAX_NUM_SEQS``     sequences decoded together (default 64)
``PADDLELLM_MAX_QUEUE``        requests waiting beyond those (default 256)
``PADDLELLM_MAX_MODEL_LEN``    context length served (default: the model's)
``PADDLELLM_BLOCK_SIZE``       KV-cache block size (default 64)
``PADDLELLM_NUM_BLOCKS``       KV-cache blocks (default: sized from the model)
``PADDLELLM_LORA_PATH``        a LoRA adapter applied to the model
``PADDLELLM_QUANT_TYPE``       quantize on load (``weight_only_int8``, ...)
=============================  ============================================================
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError

_INT = {"PADDLELLM_MAX_NUM_SEQS": "max_num_seqs", "PADDLELLM_MAX_QUEUE": "max_queue",
        "PADDLELLM_MAX_MODEL_LEN": "max_model_len", "PADDLELLM_BLOCK_SIZE": "block_size",
        "PADDLELLM_NUM_BLOCKS": "num_blocks"}
_STR = {"PADDLELLM_SERVED_MODEL_NAME": "served_model_name", "PADDLELLM_DTYPE": "dtype",
        "PADDLELLM_LORA_PATH": "lora_path", "PADDLELLM_QUANT_TYPE": "quant_type"}


def options_from_env(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """``create_app`` keyword arguments from ``PADDLELLM_*`` variables (bad values: ConfigError)."""
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {"model_name_or_path": env.get("PADDLELLM_MODEL") or None}
    for var, key in _STR.items():
        if env.get(var):
            options[key] = env[var]
    for var, key in _INT.items():
        if env.get(var):
            try:
                options[key] = int(env[var])
            except ValueError:
                raise ConfigError(f"{var}={env[var]!r}: expected an integer") from None
            if options[key] < 1:
                raise ConfigError(f"{var}={env[var]!r}: must be at least 1")
    key = env.get("PADDLELLM_API_KEY")
    if not key and env.get("PADDLELLM_API_KEY_FILE"):
        path = Path(env["PADDLELLM_API_KEY_FILE"])
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"PADDLELLM_API_KEY_FILE={path}: {exc.strerror}") from None
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

                self._app = create_app(**options_from_env())
            return self._app

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            import anyio

            await anyio.to_thread.run_sync(self._build)
        await self._app(scope, receive, send)
