""":class:`EngineConfig`: every option of the inference engine and the server, in one frozen
object (vLLM's ``VllmConfig`` shape), parsed once and passed whole.

Each option is defined here once -- name, type, default, help, panel -- and everything else
derives from that definition:

* the command-line flag is ``--<name>`` (``llm serve`` takes every option; ``llm predict``
  and ``llm chat`` the ones that apply to them: :mod:`paddlellm.cli.engine_options`);
* the environment variable is ``PADDLELLM_<NAME>`` (``uvicorn paddlellm.serving:app``,
  ``llm serve`` and :func:`paddlellm.serving.create_app` read them; a flag or an argument
  wins); ``PADDLELLM_MODEL`` is kept as an alias of ``PADDLELLM_MODEL_NAME_OR_PATH``;
* the Python keyword is ``<name>``: ``LLMEngine.from_pretrained(path, block_size=16)``,
  ``create_app(path, max_queue=32)`` build an ``EngineConfig`` from their keywords.

So a spelling cannot drift between the three (``tests/test_engine_config.py`` checks every
field). Values are validated when the config is built, before any model loads; an error
names the flag, the variable or the keyword that was wrong.

This module imports only pydantic (and :mod:`paddlellm.plugin.device`): ``llm --help`` reads it
without importing numpy or Paddle.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..errors import ConfigError

__all__ = ["EngineConfig", "ENV_PREFIX", "PANELS", "describe_validation_error"]

ENV_PREFIX = "PADDLELLM_"
PANELS = ("Model", "KV cache and batching", "Speculative decoding", "Request limits")
DTYPES = ("float32", "float16", "bfloat16")
_DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16",
                  "bf16": "bfloat16"}
_OFF = ("", "none", "None")


def _opt(default: Any, help: str, panel: str, *, env_aliases: tuple[str, ...] = (),
         metavar: str | None = None, nargs: str | None = None, **constraints: Any) -> Any:
    """One option: its default, help line and help panel (plus pydantic constraints);
    ``nargs="+"``: a list option whose flag takes one or more values (argparse's ``+``)."""
    extra: dict[str, Any] = {"panel": panel}
    if nargs:
        extra["nargs"] = nargs
    if env_aliases:
        extra["env_aliases"] = list(env_aliases)
    if metavar:
        extra["metavar"] = metavar
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class EngineConfig(BaseModel):
    """The engine's and the server's options (see the module docstring). Frozen: derive a
    changed copy with :meth:`replace`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # -- Model ---------------------------------------------------------------------------
    model_name_or_path: Optional[str] = _opt(
        None, "Model directory (HF layout), hub id or a --peft run's adapter folder (loaded on "
        "the base it names); default: the bundled instruction-tuned demo model.", "Model",
        env_aliases=("PADDLELLM_MODEL",))
    served_model_name: Optional[str] = _opt(
        None, "Model id in the API (default: the directory name).", "Model")
    lora_path: Optional[str] = _opt(None, "PEFT (LoRA-family) adapter merged into the weights.",
                                    "Model")
    lora_modules: tuple[tuple[str, str], ...] = _opt(
        (), "LoRA adapters served unmerged beside the base, as NAME=PATH pairs (vLLM's "
            "syntax; several after one flag); a request's `model` picks one.", "Model",
        metavar="NAME=PATH...", nargs="+")
    quant_type: Optional[str] = _opt(None, "Quantize the weights on load, e.g. "
                                           "weight_only_int8 (quant plugin).", "Model")
    dtype: str = _opt("float32", "Weight dtype: float32, float16 or bfloat16.", "Model",
                      metavar="|".join(DTYPES))
    device: Optional[str] = _opt(None, "cpu, gpu:0, ... (default: auto; sets the backend up, "
                                       "threads included).", "Model")
    attention_kernel: str = _opt("auto", "Attention kernel for the engine's paged attention "
                                         "(`llm kernels list`); auto: the best that supports "
                                         "the call.", "Model")
    cachekv_int8_type: Optional[str] = _opt(
        None, "static: the int8 KV cache of an a8w8c8 checkpoint (checked); PaddleNLP's "
              "deprecated dynamic is refused with a hint.", "Model")

    # -- KV cache and batching -------------------------------------------------------------
    block_size: int = _opt(64, "Tokens per KV-cache block.", "KV cache and batching", ge=1)
    num_blocks: Optional[int] = _opt(None, "KV-cache blocks (default: sized from "
                                           "--kv_cache_bytes).", "KV cache and batching", ge=1)
    kv_cache_bytes: int = _opt(1 << 30, "KV-cache memory budget in bytes when --num_blocks is "
                                        "not given.", "KV cache and batching", ge=1)
    max_num_seqs: int = _opt(64, "Most sequences decoded together in one batch.",
                             "KV cache and batching", ge=1)
    max_model_len: Optional[int] = _opt(None, "Context length (default: the model's).",
                                        "KV cache and batching", ge=2)
    max_num_batched_tokens: Optional[int] = _opt(
        None, "Most tokens one engine step runs (default: max(4096, max_model_len)).",
        "KV cache and batching", ge=1)
    enable_prefix_caching: bool = _opt(
        True, "Reuse the KV blocks of prompt prefixes earlier requests computed (system "
              "prompts, few-shot headers, chat histories); outputs are unchanged. Off for "
              "models where reuse could change them (docs/serving.md).",
        "KV cache and batching", metavar="true|false")
    max_queue: int = _opt(256, "Requests that may wait beyond --max_num_seqs; more get 503.",
                          "KV cache and batching", ge=0)

    # -- Speculative decoding -------------------------------------------------------------
    speculate_method: Optional[str] = _opt(
        None, "None | inference_with_reference (n-gram prompt lookup drafts, verified "
              "exactly: output as without it).", "Speculative decoding")
    speculate_max_draft_token_num: int = _opt(1, "Draft tokens proposed per step.",
                                              "Speculative decoding")
    speculate_max_ngram_size: int = _opt(1, "Longest n-gram matched to find drafts.",
                                         "Speculative decoding")
    speculate_verify_window: int = _opt(2, "PaddleNLP TopP+window verify; accepted, unused: "
                                           "verification here is exact.",
                                        "Speculative decoding")
    speculate_max_candidate_len: int = _opt(5, "PaddleNLP TopP+window verify; accepted, "
                                               "unused: verification here is exact.",
                                            "Speculative decoding")

    # -- Request limits (docs/security.md) --------------------------------------------------
    max_body_bytes: int = _opt(8 * 1024 * 1024, "Largest request body, bytes (413 beyond).",
                               "Request limits", gt=0)
    body_timeout: float = _opt(30.0, "Seconds to receive a request body (408 beyond).",
                               "Request limits", gt=0)
    max_json_depth: int = _opt(32, "Deepest JSON nesting in a body (400 beyond).",
                               "Request limits", gt=0)
    prompt_chars_per_token: int = _opt(32, "Prompts over max_model_len x this many characters "
                                           "are refused before tokenizing.", "Request limits",
                                       gt=0)
    template_max_iterations: int = _opt(1_000_000, "Loop iterations + calls per chat-template "
                                                   "render.", "Request limits", gt=0)
    template_max_seconds: float = _opt(5.0, "Seconds per chat-template render.",
                                       "Request limits", gt=0)
    prep_threads: int = _opt(4, "Worker threads that parse, render and tokenize requests.",
                             "Request limits", gt=0)

    # -- validation -------------------------------------------------------------------------
    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields))
            if unknown:  # a misspelt keyword is a TypeError, as for any Python call
                raise TypeError(f"unknown engine option(s) {', '.join(unknown)}; valid: "
                                f"{', '.join(cls.model_fields)}")
        return data

    @field_validator("model_name_or_path", "lora_path", mode="before")
    @classmethod
    def _path(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @field_validator("lora_modules", mode="before")
    @classmethod
    def _lora_modules(cls, value: Any) -> Any:
        return parse_lora_modules(value)

    @field_validator("quant_type", "served_model_name", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _DTYPE_ALIASES.get(value.lower(), value.lower())
            if value not in DTYPES:
                raise ValueError(f"valid dtypes are {', '.join(DTYPES)}")
        return value

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> Any:
        from ..plugin.device import AUTO_VALUES, parse_device

        if value in AUTO_VALUES:
            return None
        try:
            parse_device(value)
        except Exception as exc:  # BackendUnavailableError: say it as a validation error
            raise ValueError(str(exc)) from None
        return value

    @field_validator("attention_kernel", mode="before")
    @classmethod
    def _kernel(cls, value: Any) -> Any:
        return "auto" if value in (None, "") else value

    @field_validator("cachekv_int8_type", mode="before")
    @classmethod
    def _cachekv(cls, value: Any) -> Any:
        if value is None or value in _OFF:
            return None
        if value == "dynamic":
            raise ValueError("PaddleNLP no longer maintains dynamic and the engine does not "
                             "offer it; quantize with `llm quantize --quant_type a8w8c8` and "
                             "use static")
        if value != "static":
            raise ValueError("valid values are static (and PaddleNLP's deprecated dynamic)")
        return value

    @field_validator("speculate_method", mode="before")
    @classmethod
    def _speculate(cls, value: Any) -> Any:
        if value is None or value in _OFF:
            return None
        from .speculative import DRAFTERS  # drafters are registered at import time

        if value not in DRAFTERS:
            raise ValueError(f"unknown speculate_method '{value}'; valid: None, "
                             f"{', '.join(sorted(DRAFTERS))}")
        return value

    @field_validator("speculate_max_draft_token_num", "speculate_max_ngram_size",
                     "speculate_verify_window", "speculate_max_candidate_len")
    @classmethod
    def _at_least_one(cls, value: int, info: Any) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {value}")
        return value

    @model_validator(mode="after")
    def _adapters_fit(self) -> "EngineConfig":
        if self.lora_modules and self.lora_path:
            raise ValueError("lora_path merges one adapter into the base, lora_modules serves "
                             "adapters unmerged beside it: give one of them")
        names = {n for n, _ in self.lora_modules}
        if self.served_model_name and self.served_model_name in names:
            raise ValueError(f"lora_modules: adapter name '{self.served_model_name}' is the "
                             "served model's name (served_model_name); choose another")
        return self

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def build(cls, config: "EngineConfig | None" = None, **options: Any) -> "EngineConfig":
        """``config`` (default: the defaults) with the keyword ``options`` applied: how the
        Python entry points (``LLMEngine``, ``create_app``) take options. A bad value is a
        :class:`ConfigError` (a ``ValueError``) naming the keyword."""
        try:
            if config is None:
                return cls(**options)
            return config.replace(**options) if options else config
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    def replace(self, **changes: Any) -> "EngineConfig":
        """A validated copy with ``changes`` applied (``None`` values included)."""
        return type(self).model_validate({**self.model_dump(), **changes})

    @property
    def speculative(self) -> bool:
        return self.speculate_method is not None

    # -- the names of an option -------------------------------------------------------------
    @classmethod
    def flag(cls, name: str) -> str:
        """``max_num_seqs`` -> ``--max_num_seqs``."""
        cls.model_fields[name]  # noqa: B018 - KeyError for a name that is not an option
        return "--" + name

    @classmethod
    def env_vars(cls, name: str) -> list[str]:
        """``max_num_seqs`` -> ``["PADDLELLM_MAX_NUM_SEQS"]`` (then any aliases)."""
        extra = cls.model_fields[name].json_schema_extra or {}
        return [ENV_PREFIX + name.upper(), *extra.get("env_aliases", [])]

    @classmethod
    def panel(cls, name: str) -> str:
        return (cls.model_fields[name].json_schema_extra or {})["panel"]

    # -- sources ------------------------------------------------------------------------------
    @classmethod
    def env_values(cls, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The options set by ``PADDLELLM_*`` variables, validated and typed (an unset or
        empty variable sets nothing; a bad value is a :class:`ConfigError` naming it)."""
        env = os.environ if environ is None else environ
        raw: dict[str, str] = {}
        source: dict[str, str] = {}
        for name in cls.model_fields:
            for var in cls.env_vars(name):
                if env.get(var):
                    raw[name], source[name] = env[var], var
                    break
        try:
            config = cls(**raw)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(
                exc, lambda n: source.get(n, n), show_value=True)) from None
        return {name: getattr(config, name) for name in raw}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "EngineConfig":
        """Defaults, then ``PADDLELLM_*`` variables, then ``overrides`` that are not None."""
        values = cls.env_values(environ)
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        try:
            return cls(**values)
        except ValidationError as exc:  # an override: named as the option users type
            raise ConfigError(describe_validation_error(
                exc, lambda n: f"--{n}" if n in given else n, show_value=True)) from None


def parse_lora_modules(value: Any) -> tuple[tuple[str, str], ...]:
    """``--lora_modules`` in any of its forms -> ``((name, path), ...)``: ``NAME=PATH`` strings
    (one string may hold several, separated by whitespace, as ``PADDLELLM_LORA_MODULES``
    does), vLLM's JSON form ``{"name": ..., "path": ...}``, ``(name, path)`` pairs or a
    ``{name: path}`` mapping. Names must be unique and non-empty."""
    import json

    if value is None or value == "":
        return ()
    if isinstance(value, Mapping):
        items: list[Any] = list(value.items())
    elif isinstance(value, str):
        items = value.split()
    else:
        items = list(value)
    pairs: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str) and item.lstrip().startswith("{"):
            try:
                data = json.loads(item)
                item = (data["name"], data["path"])
            except (ValueError, KeyError, TypeError):
                raise ValueError(f"{item!r} is not JSON with a name and a path") from None
        elif isinstance(item, str):
            name, eq, path = item.partition("=")
            if not eq:
                raise ValueError(f"{item!r} is not NAME=PATH")
            item = (name, path)
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise ValueError(f"{item!r} is not a (name, path) pair")
        name, path = str(item[0]).strip(), os.fspath(item[1]).strip()
        if not name or not path:
            raise ValueError(f"{name or '?'}={path or '?'}: both the name and the path are "
                             "needed")
        if any(c.isspace() for c in name):
            raise ValueError(f"adapter name {name!r} contains whitespace")
        if name in (n for n, _ in pairs):
            raise ValueError(f"adapter name '{name}' is given twice")
        pairs.append((name, path))
    return tuple(pairs)


def describe_validation_error(exc: ValidationError, spell=lambda name: name,
                              show_value: bool = False) -> str:
    """One clause per problem, each naming the option as ``spell(field)`` spells it (a flag,
    a variable, a keyword); ``show_value`` adds the value that was given."""
    lines = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err.get("loc") else ""
        message = err["msg"].removeprefix("Value error, ")
        if not field:
            lines.append(f"engine options: {message}")
        elif re.search(rf"\b{field}\b", message):  # the message names it: spell it so
            lines.append(re.sub(rf"\b{field}\b", spell(field), message, count=1))
        else:
            given = f"={err['input']!r}" if show_value and "input" in err else ""
            lines.append(f"{spell(field)}{given}: {message}")
    return "; ".join(lines)
