"""PaddleNLP's request shapes on ``/v1/chat/completions``.

* The flask server of PaddleNLP's inference tutorial (``predict/flask_server.py``) takes
  ``{"message": [...]}`` for ``messages``, ``max_length`` for ``max_tokens`` and
  ``src_length`` (keep the last that many prompt tokens); its answer is OpenAI's, so those
  keys are folded into :class:`~paddlellm.serving.protocol.ChatCompletionRequest`
  (:func:`fold_flask_keys`).
* PaddleNLP's serving tool (``llm/server``) takes ``{"text": ...}`` or ``{"messages": ...}``
  with ``req_id``, ``max_dec_len``, ``topp``, ``penalty_score``, ... and answers
  ``{"result", "tokens_all", "is_end", "error_code": 0, ...}`` (JSON lines of
  ``{"token", "send_idx", "is_end"}`` when streaming): :class:`ServingToolRequest`, chosen by
  :class:`ChatBody` when the body has ``text``, ``req_id`` or ``max_dec_len``.

Both models answer to ``default`` and ``paddlenlp`` as well as to their own name
(:data:`COMPAT_MODEL_NAMES`), as PaddleNLP's examples name them.
"""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .protocol import APIError, ChatCompletionRequest, ChatMessage

COMPAT_MODEL_NAMES = ("default", "paddlenlp")
#: top-level keys that only the serving tool's body has
TOOL_KEYS = ("text", "req_id", "max_dec_len", "min_dec_len", "topp", "penalty_score")


def fold_flask_keys(body: Any) -> Any:
    """The flask server's keys as OpenAI's (``message`` -> ``messages``, ``max_length`` ->
    ``max_tokens``); ``src_length`` stays (a field of the chat request)."""
    if not isinstance(body, dict):
        return body
    if "message" in body and "messages" not in body:
        body = {**body, "messages": body["message"]}
        del body["message"]
    if "max_length" in body and "max_tokens" not in body and "max_completion_tokens" not in body:
        body = {**body, "max_tokens": body["max_length"]}
        del body["max_length"]
    return body


class ServingToolRequest(BaseModel):
    """The body PaddleNLP's serving tool takes (its documented request fields)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    text: Optional[str] = None
    messages: Optional[list[ChatMessage]] = Field(None, min_length=1)
    req_id: Union[str, int, None] = None
    model: Optional[str] = None
    max_dec_len: Optional[int] = Field(None, ge=1)
    min_dec_len: int = Field(1, ge=1)
    topp: float = Field(0.7, gt=0.0, le=1.0)
    temperature: float = Field(0.95, ge=0.0, le=2.0)
    penalty_score: float = Field(1.0, gt=0.0, le=100.0)
    frequency_score: float = 0.0
    presence_score: float = 0.0
    stream: bool = False
    timeout: Optional[int] = Field(None, ge=1)
    return_usage: bool = False

    @model_validator(mode="after")
    def _one_input(self):
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of text and messages")
        return self

    def check_supported(self) -> None:
        if self.min_dec_len > 1:
            raise APIError(400, "min_dec_len above 1 is not supported", param="min_dec_len",
                           code="unsupported_parameter")
        for name in ("frequency_score", "presence_score"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported (use penalty_score)", param=name,
                               code="unsupported_parameter")

    def chat_request(self) -> ChatCompletionRequest:
        """The same request as OpenAI's chat request (rendered with the chat template)."""
        messages = self.messages or [ChatMessage(role="user", content=self.text)]
        return ChatCompletionRequest(messages=messages, model=self.model,
                                     max_tokens=self.max_dec_len, top_p=self.topp,
                                     temperature=self.temperature,
                                     repetition_penalty=self.penalty_score, stream=self.stream)


class ChatBody:
    """``model_validate(body)`` -> a :class:`ServingToolRequest` for the serving tool's body,
    else a :class:`ChatCompletionRequest` (flask keys folded in)."""

    @staticmethod
    def model_validate(body: Any):
        if isinstance(body, dict) and any(k in body for k in TOOL_KEYS) and "message" not in body:
            return ServingToolRequest.model_validate(body)
        return ChatCompletionRequest.model_validate(fold_flask_keys(body))


def tool_result(req_id: str, text: str, token_ids: list[int], usage: dict | None) -> dict:
    out = {"req_id": req_id, "result": text, "tokens_all": text, "token_ids": token_ids,
           "is_end": 1, "error_msg": "", "error_code": 0}
    if usage is not None:
        out["usage"] = usage
    return out


def tool_chunk(req_id: str, token: str, send_idx: int, is_end: bool,
               usage: dict | None = None) -> dict:
    out = {"req_id": req_id, "token": token, "send_idx": send_idx, "is_end": int(is_end),
           "error_msg": "", "error_code": 0}
    if usage is not None:
        out["usage"] = usage
    return out
