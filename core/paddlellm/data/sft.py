"""Supervised fine-tuning data: records -> conversations -> token ids with response-only labels.

Record formats (jsonl, one per line), as users know them from PaddleNLP's LLM suite and
OpenAI:

* ``{"src": "question", "tgt": "answer"}``
* ``{"src": ["q1", "q2"], "tgt": ["a1", "a2"]}`` — a multi-turn conversation
* ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``

Only assistant tokens are trained on (``labels`` are ``-100`` elsewhere). With a chat
template, the conversation is rendered with the tokenizer's template, and each assistant
turn is located by rendering the conversation up to it with ``add_generation_prompt``.
Without one, turns are plain ``src`` + ``tgt`` + eos, as PaddleNLP does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import numpy as np

from ..errors import DataFormatError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")
T = TypeVar("T")


def record_to_messages(record: Any, where: str) -> list[dict[str, str]]:
    """One jsonl record as a list of chat messages; ``where`` is ``file:line`` for errors."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataFormatError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise DataFormatError(f"{where}: messages[{i}] must be an object with 'role' in "
                                      f"{'/'.join(ROLES)} and a string 'content'")
        if not any(m["role"] == "assistant" for m in messages):
            raise DataFormatError(f"{where}: no assistant message to train on")
        return [{"role": m["role"], "content": m["content"]} for m in messages]
    if "src" not in record or "tgt" not in record:
        raise DataFormatError(f"{where}: expected 'src' and 'tgt' (or 'messages', or a layout "
                              "of docs/data.md); found keys "
                              f"{', '.join(sorted(record)) or 'none'} (map columns with "
                              "--data_columns prompt=COLUMN,response=COLUMN)")
    src, tgt = record["src"], record["tgt"]
    if isinstance(src, str) and isinstance(tgt, str):
        src, tgt = [src], [tgt]
    if (not isinstance(src, list) or not isinstance(tgt, list)
            or not all(isinstance(x, str) for x in (*src, *tgt))):
        raise DataFormatError(f"{where}: 'src' and 'tgt' must both be strings or both lists of strings")
    if len(src) != len(tgt) or not src:
        raise DataFormatError(f"{where}: 'src' has {len(src)} turns but 'tgt' has {len(tgt)}")
    return src_tgt_messages(record, src, tgt)


def src_tgt_messages(record: dict, src: list[str], tgt: list[str]) -> list[dict[str, str]]:
    """The chat messages of a PaddleNLP ``src``/``tgt`` record: its ``system`` string, then
    ``src[i]`` as user turns each answered by ``tgt[i]`` (``tgt`` may be one turn shorter:
    the last question is then left unanswered, as in preference records)."""
    messages = []
    if isinstance(record.get("system"), str):
        messages.append({"role": "system", "content": record["system"]})
    for i, question in enumerate(src):
        messages.append({"role": "user", "content": question})
        if i < len(tgt):
            messages.append({"role": "assistant", "content": tgt[i]})
    return messages


def iter_records(path: str | Path, what: str = "data file") -> Iterator[tuple[str, Any]]:
    """``(where, record)`` of a data source: the JSON object of every non-blank line of a jsonl
    file (``where`` = ``file:line``), or the rows of a Hugging Face ``datasets`` source
    (parquet/arrow/JSON-array files, their folders, Hub dataset ids:
    :mod:`paddlellm.data.hf_datasets`; ``where`` = ``source[split][row]``)."""
    from .hf_datasets import is_datasets_source, iter_dataset_records
    from .textfile import iter_lines, parse_json_line

    if is_datasets_source(path):
        yield from iter_dataset_records(path, what)
        return
    path = Path(path)
    for lineno, line in iter_lines(path, what):
        if line.strip():
            where = f"{path}:{lineno}"
            yield where, parse_json_line(line, where)


def read_jsonl(path: str | Path, parse: Callable[[Any, str], T], empty: str = "no examples",
               what: str = "data file", columns: Mapping[str, str] | None = None) -> list[T]:
    """``parse(record, where)`` of every record of a data source (:func:`iter_records`: a
    jsonl file or a Hugging Face ``datasets`` source); a missing file (``{what} not found``),
    a line that is not JSON or a source with no records (``empty``) is an error naming file
    (and line or row).

    With ``columns`` (a ``--data_columns`` mapping, ``{}`` for none) each record first goes
    through :func:`paddlellm.data.columns.normalise_record`: mapped columns and the layouts
    of common datasets (alpaca, ShareGPT, TRL's prompt/chosen/rejected) become the SFT and
    preference formats."""
    from .columns import normalise_record

    out = []
    for where, record in iter_records(path, what):
        if columns is not None:
            record = normalise_record(record, columns, where)
        out.append(parse(record, where))
    if not out:
        raise DataFormatError(f"{path}: {empty}")
    return out


def read_sft_jsonl(path: str | Path, columns: Mapping[str, str] | None = None
                   ) -> list[list[dict[str, str]]]:
    """Conversations of a data source (jsonl, or a ``datasets`` source); records in other
    layouts are mapped by ``columns`` (:mod:`paddlellm.data.columns`); a malformed record is an
    error naming file and line (or row)."""
    return read_jsonl(path, record_to_messages, columns=columns)


@dataclass
class Example:
    """One tokenized conversation: ``input_ids`` and aligned ``labels`` (``-100`` = no loss)."""

    input_ids: list[int]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


def _render_ids(tokenizer, messages, add_generation_prompt: bool) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                              add_generation_prompt=add_generation_prompt))


def tokenize_conversation(tokenizer, messages: Sequence[dict[str, str]]) -> Example:
    """Token ids of the whole conversation with labels on assistant turns only."""
    if getattr(tokenizer, "chat_template", None):
        ids: list[int] = []
        labels: list[int] = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = _render_ids(tokenizer, messages[:i], add_generation_prompt=True)
            full = _render_ids(tokenizer, messages[:i + 1], add_generation_prompt=False)
            if full[:len(ids)] != ids or full[:len(prompt)] != prompt:
                raise DataFormatError("the chat template does not render conversations as "
                                      "growing prefixes; cannot locate assistant turns")
            labels += [IGNORE_INDEX] * (len(prompt) - len(ids)) + full[len(prompt):]
            ids = full
        return Example(ids, labels)
    eos = tokenizer.eos_token_id
    ids, labels = [], []
    for message in messages:
        if message["role"] == "assistant":
            piece = tokenizer.encode(message["content"], add_special_tokens=False)
            piece = piece + ([eos] if eos is not None else [])
            ids += piece
            labels += piece
        else:
            piece = tokenizer.encode(message["content"], add_special_tokens=not ids)
            ids += piece
            labels += [IGNORE_INDEX] * len(piece)
    return Example(ids, labels)


def tokenize_all(tokenizer, conversations: Iterable[Sequence[dict]], max_length: int
                 ) -> tuple[list[Example], int]:
    """Tokenize and truncate to ``max_length``; drops examples left with no target token.

    Returns ``(examples, dropped)``.
    """
    out, dropped = [], 0
    for messages in conversations:
        ex = tokenize_conversation(tokenizer, messages)
        ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        if all(label == IGNORE_INDEX for label in ex.labels[1:]):
            dropped += 1
            continue
        out.append(ex)
    return out, dropped


# --- batching ------------------------------------------------------------------------------

def pad_batch(examples: Sequence[Example], pad_id: int) -> dict[str, np.ndarray]:
    """Right-padded ``input_ids``, ``labels`` and ``attention_mask`` of equal length."""
    width = max(len(e) for e in examples)
    ids = np.full((len(examples), width), pad_id, dtype=np.int64)
    labels = np.full((len(examples), width), IGNORE_INDEX, dtype=np.int64)
    mask = np.zeros((len(examples), width), dtype=np.int64)
    for row, e in enumerate(examples):
        ids[row, :len(e)] = e.input_ids
        labels[row, :len(e)] = e.labels
        mask[row, :len(e)] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def pack_examples(examples: Sequence[Example], max_length: int) -> list[list[Example]]:
    """Group examples (in order, first fit) into bins of at most ``max_length`` tokens."""
    bins: list[list[Example]] = []
    room: list[int] = []
    for ex in examples:
        for i, free in enumerate(room):
            if len(ex) <= free:
                bins[i].append(ex)
                room[i] -= len(ex)
                break
        else:
            bins.append([ex])
            room.append(max_length - len(ex))
    return bins


def packed_batch(bins: Sequence[Sequence[Example]], pad_id: int) -> dict[str, np.ndarray]:
    """Zero-padding batch: each row concatenates a bin's examples, with ``segment_ids``
    (block-diagonal attention) and ``position_ids`` restarting at 0 for every example.

    Padding at the end of a row has segment ``-1`` (a block of its own) and no labels.
    """
    width = max(sum(len(e) for e in b) for b in bins)
    n = len(bins)
    ids = np.full((n, width), pad_id, dtype=np.int64)
    labels = np.full((n, width), IGNORE_INDEX, dtype=np.int64)
    segments = np.full((n, width), -1, dtype=np.int64)
    positions = np.zeros((n, width), dtype=np.int64)
    for row, b in enumerate(bins):
        start = 0
        for seg, e in enumerate(b):
            end = start + len(e)
            ids[row, start:end] = e.input_ids
            labels[row, start:end] = e.labels
            labels[row, start] = IGNORE_INDEX  # never predicted from the previous example
            segments[row, start:end] = seg
            positions[row, start:end] = np.arange(len(e))
            start = end
    return {"input_ids": ids, "labels": labels, "segment_ids": segments,
            "position_ids": positions}


def padding_ratio(batches: Iterable[dict[str, np.ndarray]]) -> float:
    """Fraction of positions in ``batches`` that are padding."""
    total = pad = 0
    for b in batches:
        total += b["input_ids"].size
        if "attention_mask" in b:
            pad += int((b["attention_mask"] == 0).sum())
        else:
            pad += int((b["segment_ids"] == -1).sum())
    return pad / max(total, 1)
