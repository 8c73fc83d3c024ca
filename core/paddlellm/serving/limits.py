"""Every bound the server puts on a request, in one place.

A request is refused as early and as cheaply as possible: the body by its size and the time
it takes to arrive, the JSON by its nesting depth, a prompt by its characters before it is
tokenized (a prompt longer than ``max_model_len * prompt_chars_per_token`` characters cannot
fit the context), and the chat template by its output, work and time per render
(:mod:`paddlellm.tokenizer.template_limits`). Parsing, validation, template rendering and
tokenization run in a small worker pool (``prep_threads``), never on the event loop, so
``/health`` and streaming stay responsive while a large request is prepared.

Each limit is set by ``llm serve --<name>`` or the environment variable
``PADDLELLM_<NAME>`` (upper case), e.g. ``--max_body_bytes`` / ``PADDLELLM_MAX_BODY_BYTES``.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ..tokenizer.template_limits import RenderLimits

__all__ = ["ServerLimits"]


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on requests (see the module docstring)."""

    #: largest request body in bytes (413 beyond)
    max_body_bytes: int = 8 * 1024 * 1024
    #: seconds a client may take to send the whole body (408 beyond; stalled uploads)
    body_timeout: float = 30.0
    #: deepest nesting of JSON arrays/objects in a body (400 beyond)
    max_json_depth: int = 32
    #: a prompt may have at most ``max_model_len * prompt_chars_per_token`` characters
    #: (checked before tokenizing; 400 beyond). Generous: real text averages 3-5.
    prompt_chars_per_token: int = 32
    #: loop iterations plus calls a chat template may run per render
    template_max_iterations: int = 1_000_000
    #: seconds one chat-template render may take
    template_max_seconds: float = 5.0
    #: worker threads that parse, render and tokenize requests (the rest wait their turn)
    prep_threads: int = 4

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"server limit {f.name} must be a positive number, got {value!r}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "ServerLimits":
        """Defaults, then ``PADDLELLM_<NAME>`` variables, then ``overrides`` (not ``None``)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            var = f"PADDLELLM_{f.name.upper()}"
            if environ.get(var):
                kind = int if isinstance(f.default, int) else float
                try:
                    values[f.name] = kind(environ[var])
                except ValueError:
                    raise ValueError(f"{var}={environ[var]!r} is not a number") from None
        unknown = set(overrides) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown server limits: {', '.join(sorted(unknown))}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def max_prompt_chars(self, max_model_len: int) -> int:
        return int(max_model_len) * self.prompt_chars_per_token

    def render_limits(self, max_model_len: int) -> RenderLimits:
        """Chat-template bounds: output up to the prompt's character limit (more cannot fit)."""
        return RenderLimits(max_output_chars=2 * self.max_prompt_chars(max_model_len),
                            max_loop_iterations=self.template_max_iterations,
                            max_seconds=self.template_max_seconds)
