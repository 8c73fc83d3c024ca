"""OpenAI response bodies: per-choice state fed by ``RequestOutput``s, and the formatter of
``chat.completion`` / ``text_completion`` objects, stream chunks, logprobs and usage."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ChoiceState:
    """One choice (engine request) of a response, accumulated from its outputs."""

    index: int
    prompt_index: int = 0
    logprobs: int | None = None  # top-logprobs count; None: logprobs off
    echo: str = ""
    #: with ``echo`` and ``logprobs``: the prompt tokens' entries (the first one's logprob None)
    prompt_logprobs: list[dict] | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    token_logprobs: list[dict] = field(default_factory=list)
    finish_reason: str | None = None
    num_prompt_tokens: int = 0
    num_output_tokens: int = 0

    def update(self, out: Any) -> dict | None:
        """Fold one ``RequestOutput`` in; the delta to stream, or ``None`` if nothing new."""
        self.num_prompt_tokens = int(out.num_prompt_tokens)
        self.num_output_tokens = int(out.num_output_tokens)
        self.token_ids.extend(out.new_token_ids)
        text = out.new_text or ""
        self.text += text
        lps = list(out.logprobs or []) if self.logprobs is not None else []
        self.token_logprobs.extend(lps)
        if out.finished:
            self.finish_reason = out.finish_reason or "stop"
        if not text and not lps and not out.finished:
            return None
        return {"text": text, "logprobs": lps, "finish_reason": self.finish_reason}


class OpenAIFormatter:
    """Builds the JSON objects of the chat and completions APIs."""

    def __init__(self, tokenizer: Any, model_name: str):
        self.tokenizer = tokenizer
        self.model_name = model_name
        self._token_text: dict[int, str] = {}

    def token_text(self, token_id: int) -> str:
        """The text of one token (a lone byte of a multi-byte character decodes to U+FFFD)."""
        text = self._token_text.get(token_id)
        if text is None:
            text = self.tokenizer.decode([int(token_id)])
            self._token_text[token_id] = text
        return text

    # ------------------------------------------------------------------ logprobs
    def _chat_logprob(self, token_id: int, logprob: float) -> dict:
        text = self.token_text(token_id)
        return {"token": text, "logprob": float(logprob), "bytes": list(text.encode("utf-8"))}

    def chat_logprobs(self, entries: list[dict], top: int) -> dict:
        content = []
        for e in entries:
            item = self._chat_logprob(e["token_id"], e["logprob"])
            item["top_logprobs"] = [self._chat_logprob(i, lp) for i, lp in list(e.get("top") or [])[:top]]
            content.append(item)
        return {"content": content}

    def completion_logprobs(self, entries: list[dict], top: int, offset: int) -> dict:
        tokens, token_logprobs, tops, offsets = [], [], [], []
        for e in entries:
            text = self.token_text(e["token_id"])
            tokens.append(text)
            offsets.append(offset)
            offset += len(text)
            if e.get("logprob") is None:  # a prompt's first token: nothing predicts it
                token_logprobs.append(None)
                tops.append(None)
                continue
            token_logprobs.append(float(e["logprob"]))
            tops.append({self.token_text(i): float(lp) for i, lp in list(e.get("top") or [])[:top]})
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops,
                "text_offset": offsets}

    def choice_logprobs(self, c: ChoiceState) -> dict | None:
        """A completion choice's logprobs: the echoed prompt's tokens (offsets from 0), then
        the generated ones (offsets from the end of the echo)."""
        if c.logprobs is None:
            return None
        lp = self.completion_logprobs(c.token_logprobs, c.logprobs, len(c.echo))
        if c.prompt_logprobs is not None:
            head = self.completion_logprobs(c.prompt_logprobs, c.logprobs, 0)
            lp = {key: head[key] + lp[key] for key in lp}
        return lp

    # ------------------------------------------------------------------ bodies
    def usage(self, choices: list[ChoiceState]) -> dict:
        prompts: dict[int, int] = {}
        for c in choices:
            prompts[c.prompt_index] = c.num_prompt_tokens
        prompt = sum(prompts.values())
        completion = sum(c.num_output_tokens for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def full_response(self, kind: str, rid: str, created: int, choices: list[ChoiceState]) -> dict:
        out = []
        for c in choices:
            if kind == "chat":
                lp = (self.chat_logprobs(c.token_logprobs, c.logprobs)
                      if c.logprobs is not None else None)
                out.append({"index": c.index, "message": {"role": "assistant", "content": c.text},
                            "logprobs": lp, "finish_reason": c.finish_reason})
            else:
                lp = self.choice_logprobs(c)
                out.append({"index": c.index, "text": c.echo + c.text, "logprobs": lp,
                            "finish_reason": c.finish_reason})
        return {"id": rid, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": created, "model": self.model_name, "choices": out,
                "usage": self.usage(choices)}

    def _chunk(self, kind: str, rid: str, created: int, choices: list[dict],
               include_usage: bool) -> dict:
        chunk = {"id": rid, "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
                 "created": created, "model": self.model_name, "choices": choices}
        if include_usage:
            chunk["usage"] = None
        return chunk

    def choice_chunk(self, kind: str, rid: str, created: int, choice: dict,
                     include_usage: bool) -> dict:
        """A stream chunk carrying one whole choice body (``max_tokens: 0``: the echo)."""
        return self._chunk(kind, rid, created, [choice], include_usage)

    def opening_chunks(self, kind: str, rid: str, created: int, choices: list[ChoiceState],
                       include_usage: bool) -> list[dict]:
        """Chat: the assistant role for every choice; completions: the echoed prompt."""
        chunks = []
        for c in choices:
            if kind == "chat":
                body = {"index": c.index, "delta": {"role": "assistant", "content": ""},
                        "logprobs": None, "finish_reason": None}
            elif c.echo:
                lp = (self.completion_logprobs(c.prompt_logprobs, c.logprobs, 0)
                      if c.prompt_logprobs is not None else None)
                body = {"index": c.index, "text": c.echo, "logprobs": lp, "finish_reason": None}
            else:
                continue
            chunks.append(self._chunk(kind, rid, created, [body], include_usage))
        return chunks

    def chunk(self, kind: str, rid: str, created: int, choice: ChoiceState, delta: dict,
              include_usage: bool) -> dict:
        if kind == "chat":
            lp = (self.chat_logprobs(delta["logprobs"], choice.logprobs)
                  if choice.logprobs is not None else None)
            body = {"index": choice.index, "delta": {"content": delta["text"]} if delta["text"] else {},
                    "logprobs": lp, "finish_reason": delta["finish_reason"]}
        else:
            offset = len(choice.echo) + len(choice.text) - len(delta["text"])
            lp = (self.completion_logprobs(delta["logprobs"], choice.logprobs, offset)
                  if choice.logprobs is not None else None)
            body = {"index": choice.index, "text": delta["text"], "logprobs": lp,
                    "finish_reason": delta["finish_reason"]}
        return self._chunk(kind, rid, created, [body], include_usage)

    def usage_chunk(self, kind: str, rid: str, created: int, choices: list[ChoiceState]) -> dict:
        chunk = self._chunk(kind, rid, created, [], False)
        chunk["usage"] = self.usage(choices)
        return chunk
