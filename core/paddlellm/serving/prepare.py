"""From bytes on the wire to token ids, bounded by :class:`ServerLimits`.

:func:`read_body` runs on the event loop (it only waits for bytes, with a size cap and a
deadline); everything that costs CPU in proportion to the request -- JSON parsing, the
structure check, pydantic validation, chat-template rendering and tokenization -- is a plain
function run in the worker pool by :func:`in_worker`.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, TypeVar

import anyio
import anyio.to_thread
import jinja2
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from ..tokenizer.template_limits import render_limits
from .limits import ServerLimits
from .protocol import APIError, ChatCompletionRequest, validation_error
from .streams import ClientDisconnected

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Worker:
    """The bounded pool in which requests are prepared (``limits.prep_threads`` at a time)."""

    def __init__(self, threads: int):
        self.threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._limiter is None:  # created inside the server's event loop
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


# ---------------------------------------------------------------------------- body
def _too_large(limits: ServerLimits) -> APIError:
    return APIError(413, f"The request body is over {limits.max_body_bytes} bytes "
                         f"(limit --max_body_bytes)", code="body_too_large")


async def read_body(request: Request, limits: ServerLimits) -> bytes:
    """The body, refused when over ``max_body_bytes`` (declared or sent) or when it does not
    arrive within ``body_timeout`` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_body_bytes:
        raise _too_large(limits)
    chunks: list[bytes] = []
    size = 0

    async def receive_all() -> None:
        nonlocal size
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise _too_large(limits)
            chunks.append(chunk)

    try:
        await asyncio.wait_for(receive_all(), timeout=limits.body_timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"The request body did not arrive within {limits.body_timeout:g} s "
                            f"(limit --body_timeout)", code="request_timeout") from None
    except ClientDisconnect:
        raise ClientDisconnected() from None
    return b"".join(chunks)


# ---------------------------------------------------------------------------- JSON
def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_structure(body: Any, max_depth: int) -> None:
    """400 for nesting deeper than ``max_depth`` or a string that is not valid Unicode (a lone
    surrogate such as ``"\\udc80"``, which JSON can spell but no tokenizer can read)."""
    # (container, depth, parent entry, key): paths are spelt out only for an error
    stack: list[tuple[Any, int, Any, Any]] = [(body, 1, None, None)]
    while stack:
        entry = stack.pop()
        value, depth = entry[0], entry[1]
        if depth > max_depth:
            raise APIError(400, f"The JSON body is nested deeper than {max_depth} levels "
                                f"(limit --max_json_depth)", param=_path(entry),
                           code="invalid_json")
        if isinstance(value, dict):
            for key, item in value.items():
                if _lone_surrogate(key):
                    raise APIError(400, "A key of the JSON body is not valid Unicode (a lone "
                                        "surrogate)", param=_path(entry), code="invalid_json")
                _visit(stack, item, depth, entry, key)
        else:
            for index, item in enumerate(value):
                _visit(stack, item, depth, entry, index)


def _visit(stack: list, item: Any, depth: int, parent: tuple, key: Any) -> None:
    kind = type(item)
    if kind is str:
        if _lone_surrogate(item):
            path = _path((item, depth + 1, parent, key))
            raise APIError(400, f"{path}: the string is not valid Unicode (it holds a lone "
                                f"surrogate)", param=path, code="invalid_value")
    elif kind is dict or kind is list:
        stack.append((item, depth + 1, parent, key))


def _path(entry: tuple) -> str | None:
    keys = []
    while entry is not None and entry[2] is not None:
        keys.append(str(entry[3]))
        entry = entry[2]
    return ".".join(reversed(keys)) or None


def _check_counts(body: dict, max_messages: int, max_prompts: int) -> None:
    """Refuse lists that cannot fit before validating them item by item."""
    messages = body.get("messages", body.get("message"))  # "message": PaddleNLP's flask body
    if isinstance(messages, list) and len(messages) > max_messages:
        raise APIError(400, f"{len(messages)} messages cannot fit this model's context of "
                            f"{max_messages} tokens (each message takes at least one token)",
                       param="messages", code="context_length_exceeded")
    prompt = body.get("prompt")
    token_lists = [prompt] if isinstance(prompt, list) and prompt and type(prompt[0]) is int else (
        [p for p in prompt if isinstance(p, list)] if isinstance(prompt, list) else [])
    longest = max((len(p) for p in token_lists), default=0)
    if longest > max_messages:  # max_messages is the context length
        raise APIError(400, f"This model's maximum context length is {max_messages} tokens. "
                            f"However, your prompt has {longest} tokens.", param="prompt",
                       code="context_length_exceeded")
    if (isinstance(prompt, list) and len(prompt) > max_prompts
            and not all(type(p) is int for p in prompt)):
        raise APIError(400, f"This request has {len(prompt)} prompts but this server runs at most "
                            f"{max_prompts} sequences at once (--max_num_seqs + --max_queue); "
                            f"split it.", param="prompt", code="too_many_sequences")


def decode_request(raw: bytes, request_cls, limits: ServerLimits, max_messages: int,
                   max_prompts: int):
    """Bytes -> validated request (worker thread): JSON, structure, counts, then the pydantic
    model."""
    try:
        body = json.loads(raw)
    except RecursionError:
        raise APIError(400, f"The JSON body is nested too deeply (limit --max_json_depth "
                            f"{limits.max_json_depth})", code="invalid_json") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5000-digit integer
        raise APIError(400, f"Invalid JSON body: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, f"The request body must be a JSON object, got {type(body).__name__}",
                       code="invalid_json")
    _check_counts(body, max_messages, max_prompts)  # cheap: lengths and types only
    check_structure(body, limits.max_json_depth)
    try:
        return request_cls.model_validate(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except RecursionError:  # belt and braces: the depth check bounds this
        raise APIError(400, "The JSON body is nested too deeply", code="invalid_json") from None


# ---------------------------------------------------------------------------- prompts
def too_many_chars(chars: int, limit: int, max_model_len: int, param: str) -> APIError:
    return APIError(400, f"This model's maximum context length is {max_model_len} tokens, and "
                         f"the prompt has {chars} characters, over the {limit} this server "
                         f"tokenizes (--prompt_chars_per_token); shorten the prompt.",
                    param=param, code="context_length_exceeded")


def chat_prompt_ids(tokenizer, req: ChatCompletionRequest, limits: ServerLimits,
                    max_model_len: int, model_name: str) -> list[int]:
    """Render the chat template (bounded) and tokenize (worker thread)."""
    messages = []
    for m in req.messages:
        message = {"role": m.role, "content": m.text()}
        if m.name:
            message["name"] = m.name
        messages.append(message)
    try:
        with render_limits(limits.render_limits(max_model_len)):
            text = tokenizer.apply_chat_template(
                messages, add_generation_prompt=req.add_generation_prompt, tokenize=False)
    except (jinja2.TemplateError, ValueError) as exc:  # limits, raise_exception, bad roles
        raise APIError(400, f"Cannot apply the chat template of `{model_name}`: {exc}",
                       param="messages") from None
    except RecursionError:
        raise APIError(400, f"Cannot apply the chat template of `{model_name}`: it recursed "
                            f"too deeply", param="messages") from None
    except Exception:  # any other failure inside template code
        logger.exception("the chat template of %s failed", model_name)
        raise APIError(400, f"Cannot apply the chat template of `{model_name}` to these messages "
                            f"(the error was logged on the server)", param="messages") from None
    return list(tokenizer.encode(text, add_special_tokens=False))


def completion_prompt_ids(tokenizer, prompts: list[str | list[int]]) -> list[list[int]]:
    """Tokenize text prompts, check token-id prompts (worker thread)."""
    vocab = len(tokenizer)
    out = []
    for prompt in prompts:
        if isinstance(prompt, str):
            out.append(list(tokenizer.encode(prompt)))
            continue
        bad = [t for t in prompt if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"Token ids out of range [0, {vocab}): {bad[:5]}", param="prompt")
        out.append(list(prompt))
    return out
