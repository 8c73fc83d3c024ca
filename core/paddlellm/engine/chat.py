"""``llm chat``: a terminal conversation on the engine, streaming each reply as it decodes."""
from __future__ import annotations

import itertools
from typing import Any, TextIO

from .sampling import SamplingParams

EXIT, RESET = "/exit", "/reset"


def render(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Prompt ids: the chat template with a generation prompt, or ``role: content`` lines."""
    if getattr(tokenizer, "chat_template", None):
        return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True))
    text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"
    return list(tokenizer.encode(text))


def fit_history(engine: Any, messages: list[dict[str, str]], reserve: int) -> list[int]:
    """Prompt ids of ``messages``, dropping the oldest turns (never the system message or
    the new user turn) until ``reserve`` tokens remain for the reply; mutates ``messages``."""
    limit = engine.max_model_len - reserve
    while True:
        ids = render(engine.tokenizer, messages)
        first = 1 if messages[0]["role"] == "system" else 0
        if len(ids) <= limit or len(messages) - first <= 1:
            break
        del messages[first:first + 2]  # oldest user/assistant pair
    if len(ids) >= engine.max_model_len:
        raise ValueError(f"the message is {len(ids)} tokens; the context holds "
                         f"{engine.max_model_len}")
    return ids


def reply(engine: Any, prompt_ids: list[int], params: SamplingParams, out: TextIO,
          request_id: str) -> str:
    """Stream one reply to ``out``; returns its text."""
    max_tokens = min(params.max_tokens, engine.max_model_len - len(prompt_ids))
    engine.add_request(request_id, prompt_ids, SamplingParams(**{**params.__dict__,
                                                                 "max_tokens": max_tokens}))
    text = ""
    while engine.has_unfinished_requests():
        for o in engine.step():
            if o.request_id == request_id and o.new_text:
                out.write(o.new_text)
                out.flush()
                text += o.new_text
    return text


def chat_loop(engine: Any, params: SamplingParams, inp: TextIO, out: TextIO,
              system: str | None = None, interactive: bool = True) -> list[dict[str, str]]:
    """Read user lines from ``inp`` until ``/exit`` or end of input; returns the history."""
    base = [{"role": "system", "content": system}] if system else []
    messages = list(base)
    if interactive:
        out.write(f"chatting with {engine.model_name} ({RESET} clears the history, "
                  f"{EXIT} quits)\n")
    for turn in itertools.count():
        if interactive:
            out.write("you> ")
            out.flush()
        line = inp.readline()
        if not line:
            break
        line = line.rstrip("\n")
        if line.strip() == EXIT:
            break
        if line.strip() == RESET:
            messages = list(base)
            out.write("(history cleared)\n")
            continue
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        try:
            ids = fit_history(engine, messages, reserve=min(params.max_tokens,
                                                             engine.max_model_len // 2))
        except ValueError as exc:
            messages.pop()
            out.write(f"(error: {exc})\n")
            continue
        out.write("assistant> ")
        text = reply(engine, ids, params, out, f"chat-{turn}")
        out.write("\n")
        out.flush()
        messages.append({"role": "assistant", "content": text})
    return messages
