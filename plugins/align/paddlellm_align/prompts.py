"""Prompts of the RLHF stages (``ppo``, ``grpo``): reading, encoding and the demo's.

A prompt file is jsonl, one prompt per line, in any of these forms:

* ``{"prompt": "What is 2 + 2?", "answer": "4"}`` — ``prompt`` a string (one user turn) or a
  list of ``{"role", "content"}`` messages; ``answer`` (optional) the reference answer a rule
  reward such as ``exact_match`` compares with;
* ``{"messages": [{"role": "user", ...}, ..., {"role": "assistant", "content": "4"}]}`` — the
  OpenAI form; a final assistant turn is the reference answer, the turns before it the prompt;
* ``{"src": "What is 2 + 2?", "tgt": "4"}`` — PaddleNLP's SFT form (``tgt`` the answer).

Prompts are rendered with the tokenizer's chat template and its generation prompt (plain
text for tokenizers without one), as the engine's chat endpoints render them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from paddlellm.errors import DataFormatError


@dataclass
class PromptRecord:
    """One prompt: the user turn (a string) or the conversation so far (messages), its
    reference answer (or None) and, for the demo, its task."""

    prompt: Any
    answer: str | None = None
    task: str | None = None
    where: str = field(default="", compare=False)

    @property
    def messages(self) -> list[dict[str, str]]:
        if isinstance(self.prompt, str):
            return [{"role": "user", "content": self.prompt}]
        return list(self.prompt)


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if (not isinstance(value, list) or not value
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in value)):
        raise DataFormatError(f"{where}: messages must be a non-empty list of "
                              "{'role': str, 'content': str} objects")
    return value


def parse_prompt(record: Any, where: str) -> PromptRecord:
    """One jsonl record as a :class:`PromptRecord` (see the module docstring for the forms)."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    answer = record.get("answer")
    if "prompt" in record:
        prompt = record["prompt"]
        if not isinstance(prompt, str):
            prompt = _messages(prompt, f"{where}: 'prompt'")
    elif "messages" in record:
        messages = _messages(record["messages"], f"{where}: 'messages'")
        if messages[-1]["role"] == "assistant":
            answer = messages[-1]["content"] if answer is None else answer
            messages = messages[:-1]
        if not messages:
            raise DataFormatError(f"{where}: 'messages' holds only an assistant turn; a prompt "
                                  "needs a user turn")
        prompt = messages
    elif "src" in record:
        src, tgt = record["src"], record.get("tgt")
        if isinstance(src, list):  # multi-turn PaddleNLP: the last src is the open question
            if not src or not all(isinstance(s, str) for s in src):
                raise DataFormatError(f"{where}: 'src' must be a string or a list of strings")
            tgt = tgt if isinstance(tgt, list) else [tgt] if tgt is not None else []
            prompt = []
            for i, s in enumerate(src):
                prompt.append({"role": "user", "content": s})
                if i < len(src) - 1 and i < len(tgt):
                    prompt.append({"role": "assistant", "content": tgt[i]})
            tgt = tgt[len(src) - 1] if len(tgt) >= len(src) else None
        else:
            prompt = src
        answer = tgt if answer is None else answer
    else:
        raise DataFormatError(f"{where}: a prompt record needs 'prompt', 'messages' or 'src' "
                              f"(got keys {', '.join(sorted(record)) or 'none'})")
    if isinstance(prompt, str) and not prompt.strip():
        raise DataFormatError(f"{where}: the prompt is empty")
    if answer is not None and not isinstance(answer, str):
        raise DataFormatError(f"{where}: 'answer' must be a string, got "
                              f"{type(answer).__name__}")
    return PromptRecord(prompt, answer, record.get("task"), where)


def read_prompt_jsonl(path: str | Path) -> list[PromptRecord]:
    """Every record of a prompt jsonl file (errors name the file and line)."""
    from paddlellm.api import iter_lines, parse_json_line

    out = []
    for number, line in iter_lines(path, "prompt file"):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        out.append(parse_prompt(parse_json_line(line, where), where))
    if not out:
        raise DataFormatError(f"{path}: no prompts")
    return out


def encode_prompt(tokenizer: Any, record: PromptRecord) -> list[int]:
    """Token ids of the rendered prompt (chat template with the generation prompt); uncut
    (``rl_common.encode_all`` cuts, and counts, prompts longer than the room left)."""
    if getattr(tokenizer, "chat_template", None):
        ids = list(tokenizer.apply_chat_template(record.messages, tokenize=True,
                                                 add_generation_prompt=True))
    else:
        text = "\n".join(m["content"] for m in record.messages)
        ids = tokenizer.encode(text, add_special_tokens=True)
    return ids


def demo_prompts(n: int, *, split: str, seed: int, tasks: Sequence[str]) -> list[PromptRecord]:
    """``n`` demo questions of ``tasks`` with their answers (train and held-out questions of
    the skill tasks never overlap; see :func:`paddlellm.api.demo_examples`)."""
    from paddlellm.api import demo_examples

    return [PromptRecord(e["src"], e["tgt"], e["task"], f"demo:{split}:{i + 1}")
            for i, e in enumerate(demo_examples(n, split=split, seed=seed, tasks=tuple(tasks)))]
