"""OpenAI API request models (pydantic) and the OpenAI error shape.

Only what the server implements is modelled; unknown fields are ignored (as vLLM does), so
clients that send optional OpenAI fields keep working. Types are strict, as OpenAI's are:
``"max_tokens": true``, ``"stream": "yes"`` or ``"temperature": "1"`` are 400s naming the
field, and numbers must be finite and in range. Fields we know but do not implement
(``frequency_penalty`` other than 0, ``logit_bias``, ``tools``, ``functions``,
``response_format``, ...) are rejected by name in :func:`unsupported_fields`, never ignored.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class APIError(Exception):
    """An error answered as ``{"error": {"message", "type", "param", "code"}}`` with ``status``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


def error_body(message: str, type: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def validation_error(exc: ValidationError) -> APIError:
    """A pydantic error as a 400 naming the first bad field (``messages.0.role``)."""
    errors = exc.errors(include_url=False)
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    first = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    return APIError(400, "Invalid request: " + "; ".join(parts), param=first or None,
                    code="invalid_value")


_STRICT = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)
INT32_MAX = 2**31 - 1
UINT64_MAX = 2**64 - 1


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ContentPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _SamplingFields(BaseModel):
    """Fields shared by chat and completions (OpenAI names, plus vLLM's extras)."""

    model_config = _STRICT
    model: Optional[str] = None  # optional: the served model when left out
    n: int = Field(1, ge=1, le=16)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: Optional[int] = Field(None, ge=-(2**63), le=UINT64_MAX)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: Optional[dict[str, float]] = None
    # extras (vLLM's names, sent through ``extra_body`` by the openai client)
    top_k: int = Field(0, ge=-1, le=INT32_MAX)
    repetition_penalty: float = Field(1.0, gt=0.0, le=100.0)
    ignore_eos: bool = False
    stop_token_ids: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] = Field(default_factory=list,
                                                                          max_length=64)

    @field_validator("temperature", "top_p", "seed", "n", mode="before")
    @classmethod
    def _null_is_default(cls, value: Any, info) -> Any:
        if value is None:  # clients send explicit nulls for "unset"
            return {"temperature": 1.0, "top_p": 1.0, "seed": None, "n": 1}[info.field_name]
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops


def _unimplemented(name: str, what: str) -> APIError:
    return APIError(400, f"{name} is not supported by this server ({what})", param=name,
                    code="unsupported_parameter")


def unsupported_fields(req: _SamplingFields) -> None:
    """400 naming the field for fields we know but cannot honour (never silently ignored)."""
    for name in ("tools", "functions"):
        if getattr(req, name, None):  # null or [] means "none"
            raise _unimplemented(name, "no tool or function calling")
    if getattr(req, "function_call", None) not in (None, "none"):
        raise _unimplemented("function_call", "no function calling")
    if getattr(req, "tool_choice", None) not in (None, "none"):
        raise _unimplemented("tool_choice", "no tool calling")
    response_format = getattr(req, "response_format", None)
    if response_format is not None and response_format != {"type": "text"}:
        raise _unimplemented("response_format", "only {\"type\": \"text\"}")
    best_of = getattr(req, "best_of", None)
    if best_of is not None and best_of != req.n:
        raise _unimplemented("best_of", "only best_of equal to n")
    if req.frequency_penalty or req.presence_penalty:
        raise APIError(400, "frequency_penalty and presence_penalty are not supported "
                            "(use repetition_penalty)",
                       param="frequency_penalty" if req.frequency_penalty else "presence_penalty",
                       code="unsupported_parameter")
    if req.logit_bias:
        raise APIError(400, "logit_bias is not supported", param="logit_bias",
                       code="unsupported_parameter")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options is only allowed when stream is true",
                       param="stream_options")


class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (vLLM's shape): the prompt ids of chat ``messages`` (rendered as
    ``/v1/chat/completions`` renders them) or of a completion ``prompt``."""

    model_config = ConfigDict(extra="ignore")
    model: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, min_length=1)
    prompt: Union[str, list[int], None] = None
    add_generation_prompt: bool = True

    @field_validator("prompt")
    @classmethod
    def _one_input(cls, prompt, info):
        if prompt is not None and info.data.get("messages") is not None:
            raise ValueError("give messages or prompt, not both")
        return prompt


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    #: PaddleNLP's flask server: keep only the last ``src_length`` prompt tokens
    src_length: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(None, ge=0, le=20)
    add_generation_prompt: bool = True
    # known OpenAI fields we do not implement: any value but "none" is a 400 naming the field
    tools: Optional[Any] = None
    tool_choice: Optional[Any] = None
    functions: Optional[Any] = None
    function_call: Optional[Any] = None
    response_format: Optional[Any] = None

    def max_new_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens


class CompletionRequest(_SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    #: 0 only with ``echo``: the prompt and its logprobs, nothing generated (lm-eval's scoring)
    max_tokens: Optional[int] = Field(16, ge=0)
    logprobs: Optional[int] = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string or a list of token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise APIError(400, "prompt must not be empty", param="prompt")
        if all(isinstance(x, int) for x in p):
            return [list(p)]
        return list(p)
