"""Every bound the server puts on a request, in one place.

A request is refused as early and as cheaply as possible: the body by its size and the time
it takes to arrive, the JSON by its nesting depth, a prompt by its characters before it is
tokenized (a prompt longer than ``max_model_len * prompt_chars_per_token`` characters cannot
fit the context), and the chat template by its output, work and time per render
(:mod:`paddlellm.tokenizer.template_limits`). Parsing, validation, template rendering and
tokenization run in a small worker pool (``prep_threads``), never on the event loop, so
``/health`` and streaming stay responsive while a large request is prepared.

Each limit is an :class:`~paddlellm.engine.config.EngineConfig` option: ``llm serve --<name>``
or the environment variable ``PADDLELLM_<NAME>`` (upper case), e.g. ``--max_body_bytes`` /
``PADDLELLM_MAX_BODY_BYTES``; :meth:`ServerLimits.from_config` reads them from a config.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from ..engine.config import EngineConfig
from ..tokenizer.template_limits import RenderLimits

__all__ = ["ServerLimits"]


_DEFAULTS = {name: field.default for name, field in EngineConfig.model_fields.items()}


@dataclass(frozen=True)
class ServerLimits:
    """Bounds on requests (see the module docstring). Each is an :class:`EngineConfig`
    option of the same name, defined there once (default and help)."""

    max_body_bytes: int = _DEFAULTS["max_body_bytes"]
    body_timeout: float = _DEFAULTS["body_timeout"]
    max_json_depth: int = _DEFAULTS["max_json_depth"]
    prompt_chars_per_token: int = _DEFAULTS["prompt_chars_per_token"]
    template_max_iterations: int = _DEFAULTS["template_max_iterations"]
    template_max_seconds: float = _DEFAULTS["template_max_seconds"]
    prep_threads: int = _DEFAULTS["prep_threads"]

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

    @classmethod
    def from_config(cls, config: EngineConfig) -> "ServerLimits":
        """The limits of an :class:`EngineConfig`."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})

    def max_prompt_chars(self, max_model_len: int) -> int:
        return int(max_model_len) * self.prompt_chars_per_token

    def render_limits(self, max_model_len: int) -> RenderLimits:
        """Chat-template bounds: output up to the prompt's character limit (more cannot fit)."""
        return RenderLimits(max_output_chars=2 * self.max_prompt_chars(max_model_len),
                            max_loop_iterations=self.template_max_iterations,
                            max_seconds=self.template_max_seconds)
