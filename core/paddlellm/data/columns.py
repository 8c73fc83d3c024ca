"""Column mapping: records of other layouts onto the SFT and preference formats.

The readers' own formats are PaddleNLP's (SFT ``src``/``tgt``, preference
``src``/``tgt``/``response``/``sort``) and OpenAI's ``messages``. Records in the layouts of
other common datasets are recognised by their columns and rewritten first:

============================================  =============================================
columns                                        read as
============================================  =============================================
``instruction``, ``input``, ``output``         alpaca SFT: ``src`` = instruction (+ a blank
                                               line + input when not empty), ``tgt`` = output
``conversations`` (``from``/``value`` or       ShareGPT SFT: ``messages`` (``human`` ->
``role``/``content`` turns)                    user, ``gpt`` -> assistant, ``system``)
``prompt``, ``chosen``, ``rejected``           preference (TRL): ``response`` = [chosen,
                                               rejected], ``sort`` = [1, 0]
``prompt``, ``completion``, ``label``          KTO (TRL, unpaired): ``sort`` = [1] for a true
                                               label, [0] for a false one
``prompt`` + ``response`` or ``completion``    SFT: ``src``, ``tgt``
============================================  =============================================

``prompt`` may be a string or a list of chat messages; ``chosen``/``rejected``/``completion``
a string or messages (the last assistant message is the response). Other column names are
mapped with ``--data_columns TARGET=COLUMN,...`` (``prompt=question,response=answer``): the
record's ``COLUMN`` is read as ``TARGET`` (:data:`TARGETS`), before the layouts above apply.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..plugin.config import TARGETS, parse_columns  # noqa: F401  (the --data_columns option)
from ..errors import DataFormatError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant",
                  "system": "system", "tool": "tool", "function": "tool", "observation": "tool"}


def _content(value: Any, key: str, where: str) -> str:
    """A response column: a string, or chat messages whose last assistant turn is it."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        for message in reversed(value):
            if message.get("role") == "assistant" and isinstance(message.get("content"), str):
                return message["content"]
    raise DataFormatError(f"{where}: '{key}' must be a string or chat messages ending in an "
                          "assistant message")


def _prompt(record: dict, where: str) -> dict:
    """``src`` (and ``tgt``, ``system``) of a ``prompt`` column: a string or messages."""
    prompt = record["prompt"]
    if isinstance(prompt, str):
        return {"src": prompt}
    if not (isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt)):
        raise DataFormatError(f"{where}: 'prompt' must be a string or a list of chat messages")
    out: dict[str, Any] = {"src": [], "tgt": []}
    for message in prompt:
        role, content = message.get("role"), message.get("content")
        if role == "system" and isinstance(content, str):
            out["system"] = content
        elif role == "user":
            out["src"].append(content)
        elif role == "assistant":
            out["tgt"].append(content)
    return out


def normalise_record(record: Any, columns: Mapping[str, str], where: str) -> Any:
    """``record`` with ``columns`` (target -> column) applied and a recognised layout (see the
    module docstring) rewritten into the SFT / preference formats; a record already in those
    formats, or in none recognised, is returned as is (its reader reports what is missing)."""
    if not isinstance(record, dict):
        return record
    if columns:
        missing = [c for c in columns.values() if c not in record]
        if missing:
            raise DataFormatError(f"{where}: --data_columns names column(s) "
                                  f"{', '.join(repr(c) for c in missing)} that the record does "
                                  f"not have (columns: {', '.join(sorted(record)) or 'none'})")
        record = {**{k: v for k, v in record.items() if k not in columns.values()},
                  **{target: record[column] for target, column in columns.items()}}
    keys = set(record)
    system = {"system": record["system"]} if isinstance(record.get("system"), str) else {}
    if "messages" in keys or {"src", "tgt"} <= keys or {"src", "response", "sort"} <= keys:
        return record
    if "conversations" in keys:
        turns = record["conversations"]
        if not isinstance(turns, list):
            raise DataFormatError(f"{where}: 'conversations' must be a list of turns")
        messages = []
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise DataFormatError(f"{where}: conversations[{i}] must be an object")
            role = turn.get("role", turn.get("from"))
            content = turn.get("content", turn.get("value"))
            if role not in SHAREGPT_ROLES:
                raise DataFormatError(f"{where}: conversations[{i}]: unknown speaker {role!r} "
                                      f"(known: {', '.join(SHAREGPT_ROLES)})")
            messages.append({"role": SHAREGPT_ROLES[role], "content": content})
        if system:
            messages.insert(0, {"role": "system", "content": system["system"]})
        return {"messages": messages}
    if {"instruction", "output"} <= keys:
        prompt = record["instruction"]
        extra = record.get("input")
        if isinstance(extra, str) and extra.strip():
            prompt = f"{prompt}\n\n{extra}"
        return {**system, "src": prompt, "tgt": record["output"]}
    if "prompt" in keys:
        base = {**system, **_prompt(record, where)}
        if {"chosen", "rejected"} <= keys:
            return {**base, "tgt": base.get("tgt", []),
                    "response": [_content(record["chosen"], "chosen", where),
                                 _content(record["rejected"], "rejected", where)],
                    "sort": [1, 0]}
        if {"completion", "label"} <= keys:
            label = record["label"]
            if not isinstance(label, (bool, int)) or label not in (0, 1):
                raise DataFormatError(f"{where}: 'label' must be true or false (got {label!r})")
            return {**base, "tgt": base.get("tgt", []),
                    "response": [_content(record["completion"], "completion", where)],
                    "sort": [int(bool(label))]}
        for key in ("response", "completion"):
            if key in keys:
                answer = _content(record[key], key, where)
                if isinstance(base["src"], list):  # a conversation: answered turns + this one
                    return {**base, "tgt": [*base.get("tgt", []), answer]}
                return {**base, "tgt": answer}
    return record
