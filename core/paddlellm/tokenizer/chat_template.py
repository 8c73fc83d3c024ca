"""Chat templates rendered with Hugging Face's Jinja semantics.

A chat template is untrusted code shipped with a checkpoint, so it runs in Jinja's
``ImmutableSandboxedEnvironment`` -- bounded per render in output size, value size, loop work
and time (:mod:`.template_limits`) -- with exactly the environment ``transformers`` builds:
``trim_blocks``/``lstrip_blocks``, the ``loopcontrols`` extension, a ``{% generation %}``
block, the ``raise_exception`` and ``strftime_now`` globals, a guarded ``namespace`` and
``dict``, and a ``tojson`` filter that does not HTML-escape (``ensure_ascii=False``).
The same template and messages render to the same string as ``transformers``.
"""
from __future__ import annotations

import contextvars
import dataclasses
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes

from .template_limits import LimitedSandboxedEnvironment, TemplateLimitError, bounded_tojson, template_label

__all__ = ["ChatTemplateError", "TemplateLimitError", "compile_chat_template", "render_chat_template"]

# Names under which a message's reasoning may arrive; templates read the first one.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
_CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


_GENERATION_TRACKING: contextvars.ContextVar = contextvars.ContextVar("generation_tracking", default=None)


class ChatTemplateError(jinja2.exceptions.TemplateError):
    """Raised by a template's ``raise_exception(...)`` call (a ``jinja2.TemplateError``)."""


class _GenerationBlock(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text; here it renders its body.

    When ``spans`` is set on the environment (a list), the character span of each block's output
    within the rendered string is appended to it (to build assistant-token masks).
    """

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_block"), [], [], body).set_lineno(lineno)

    def _render_block(self, caller) -> str:
        text = caller()
        tracking = _GENERATION_TRACKING.get()
        if tracking is not None:  # (chunks rendered so far, spans)
            chunks, spans = tracking
            start = sum(len(c) for c in chunks)
            spans.append((start, start + len(text)))
        return text


def _raise_exception(message: str):
    raise ChatTemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False) -> str:
    # Jinja's own tojson HTML-escapes '<', '>', '&' and "'"; chat templates expect plain JSON
    # (built in bounded chunks: a huge value or indent stops at the render's output limit).
    return bounded_tojson(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _SafeDict:
    """``dict(...)`` for templates without exposing the ``dict`` type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _Namespace(jinja2.utils.Namespace):
    """Jinja's ``namespace`` that refuses underscore-prefixed attributes (no access to internals)."""

    def __init__(*args, **kwargs):  # same signature trick as jinja2.utils.Namespace
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"Chat templates cannot store underscore-prefixed attributes on a namespace, but got {name!r}. "
                "Please rename the attribute."
            )


@lru_cache(maxsize=64)
def compile_chat_template(source: str) -> jinja2.Template:
    """Compile ``source`` in the sandboxed environment (cached per template string)."""
    env = LimitedSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationBlock, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _SafeDict()
    env.globals["namespace"] = _Namespace
    return env.from_string(source)


def _plain(value: Any) -> Any:
    """Rebuild ``value`` from plain JSON-like types so the sandbox never sees rich objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "shape", None) == ():
        return _plain(value.item())  # numpy / paddle scalars
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if callable(getattr(value, "model_dump", None)):
        return _plain(value.model_dump())
    return f"<{type(value).__name__}>"


def _alias_reasoning(chat: list[dict]) -> list[dict]:
    out = []
    for message in chat:
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out


def _tag_final_message(chat: list[dict], field: str, template: str) -> str:
    """Append the continuation tag to the final message's ``field``; return the original text."""
    if not chat:
        raise ValueError("continue_final_message is set but the conversation is empty!")
    final = chat[-1].get(field)
    if final is None:
        raise ValueError(f'continue_final_message is set but the final message has no "{field}" to continue!')
    fields = [field]
    if field in _REASONING_FIELDS:
        fields = [f for f in _REASONING_FIELDS if chat[-1].get(f) == final]
    if not any(f in template for f in fields):
        raise ValueError(
            f'continue_final_message is set to "{field}" but this is not an accepted field in the chat_template'
        )
    if isinstance(final, (list, tuple)):
        for block in reversed(final):
            if "text" in block:
                text = block["text"]
                block["text"] = text + _CONTINUE_TAG
                return text
        raise ValueError("continue_final_message is set but we could not find any text to continue in the final message!")
    for f in fields:
        chat[-1][f] = chat[-1][f] + _CONTINUE_TAG
    return final


def _cut_after_final_message(rendered: str, final: str) -> str:
    """Drop everything the template wrote after the final message (its end-of-turn tokens)."""
    tag = _CONTINUE_TAG.strip()
    if final.strip() not in rendered or tag not in rendered:
        raise ValueError(
            "continue_final_message is set but the final message does not appear in the chat after applying the "
            "chat template; the template deletes part of it. Final message to continue: "
            f"{final.strip()!r}\nRendered chat:\n{rendered}"
        )
    loc = rendered.rindex(tag)
    if rendered[loc : loc + len(_CONTINUE_TAG)] == _CONTINUE_TAG:
        return rendered[:loc]
    return rendered[:loc].rstrip()  # the template trimmed the message's trailing space


def render_chat_template(
    template: str,
    conversations: Sequence[Sequence[Mapping]],
    *,
    tools: Sequence[Mapping] | None = None,
    documents: Sequence[Mapping] | None = None,
    add_generation_prompt: bool = False,
    continue_final_message: bool | str = False,
    generation_spans: list | None = None,
    **variables,
) -> list[str]:
    """Render each conversation with ``template``; ``variables`` (special tokens, kwargs) are globals.

    Messages whose value is ``None`` lose that key first (OpenAI-style ``content=None``), as in
    ``transformers``. With ``generation_spans`` (a list), one list of ``(start, end)`` character
    spans of the ``{% generation %}`` blocks is appended per conversation.
    """
    if continue_final_message and add_generation_prompt:
        raise ValueError(
            "continue_final_message and add_generation_prompt are not compatible: use continue_final_message to let "
            "the model continue the final message, add_generation_prompt to start a new assistant message."
        )
    compiled = compile_chat_template(template)
    env, label = compiled.environment, template_label(template)
    if tools is not None:
        for tool in tools:
            if not isinstance(tool, Mapping):
                raise ValueError(f"Tools must be JSON-schema dicts, got {type(tool).__name__}.")
    if documents is not None:
        for document in documents:
            if not isinstance(document, Mapping):
                raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
    tools, documents, variables = _plain(tools), _plain(documents), _plain(variables)
    field = continue_final_message if isinstance(continue_final_message, str) else "content"
    rendered = []
    for conversation in conversations:
        if hasattr(conversation, "messages"):
            conversation = conversation.messages
        chat = _plain([{k: v for k, v in dict(m).items() if v is not None} for m in conversation])
        chat = _alias_reasoning(chat)
        final = _tag_final_message(chat, field, template) if continue_final_message else None
        context = dict(messages=chat, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt,
                       **variables)
        if generation_spans is None:
            text = env.bounded_render(compiled, label, context)
        else:
            chunks: list[str] = []
            spans: list[tuple[int, int]] = []
            token = _GENERATION_TRACKING.set((chunks, spans))
            try:
                text = env.bounded_render(compiled, label, context, chunks)
            finally:
                _GENERATION_TRACKING.reset(token)
            generation_spans.append(spans)
        if continue_final_message:
            text = _cut_after_final_message(text, final)
        rendered.append(text)
    return rendered
