"""Preference data: PaddleNLP's jsonl -> prompt/response token ids -> packed batches.

Records (one JSON object per line), as in PaddleNLP's LLM suite:

* pairwise (DPO family): ``{"src": [...], "tgt": [...], "response": [r1, r2, ...],
  "sort": [s1, s2, ...]}`` — ``src``/``tgt`` the conversation so far (``len(tgt) ==
  len(src) - 1``: the last ``src`` is the question being answered, strings are one-turn
  lists); the response with the highest ``sort`` is chosen, the lowest rejected.
* pointwise (KTO): ``{"src", "tgt", "response": [r] (or "r"), "sort": [1 | 0]}`` — 1 desirable.

Packing: every sequence is ``prompt + response``; the sequences of a batch are packed
first-fit into rows (a pair's chosen and rejected always share a row), each sequence its own
``segment_ids`` block (block-diagonal causal attention) with positions restarting at 0, so
one forward computes the whole batch with no padding except at row ends. Only the hidden
states of positions that predict a response token go through the vocabulary projection.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from paddlellm.api import IGNORE_INDEX, read_jsonl, src_tgt_messages, tokenize_conversation
from paddlellm.errors import DataFormatError


@dataclass
class PreferenceRecord:
    """A prompt conversation and its responses (``chosen``/``rejected``; KTO uses ``chosen``
    with ``desirable`` telling which it is)."""

    messages: list[dict[str, str]]
    chosen: str
    rejected: str | None = None
    desirable: bool = True


def _string_list(value: Any, key: str, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise DataFormatError(f"{where}: '{key}' must be a string or a list of strings")
    return value


def parse_record(record: Any, where: str, pointwise: bool) -> PreferenceRecord:
    """One jsonl record; ``where`` (``file:line``) prefixes every error."""
    if not isinstance(record, dict):
        raise DataFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    missing = [k for k in ("src", "response", "sort") if k not in record]
    if missing:
        raise DataFormatError(f"{where}: missing {', '.join(repr(k) for k in missing)}; a "
                              "preference record has 'src', 'tgt', 'response' and 'sort', "
                              "or 'prompt', 'chosen' and 'rejected' "
                              f"(found {', '.join(sorted(record)) or 'no keys'}; map columns "
                              "with --data_columns prompt=COLUMN,chosen=COLUMN,rejected=COLUMN)")
    src = _string_list(record["src"], "src", where)
    tgt = _string_list(record.get("tgt", []), "tgt", where)
    responses = _string_list(record["response"], "response", where)
    sort = record["sort"]
    if isinstance(sort, (int, float)) and not isinstance(sort, bool):
        sort = [sort]
    if not src:
        raise DataFormatError(f"{where}: 'src' is empty")
    if len(tgt) != len(src) - 1:
        raise DataFormatError(f"{where}: 'tgt' must have one turn fewer than 'src' (the last "
                              f"'src' is answered by 'response'); got {len(src)} src and "
                              f"{len(tgt)} tgt")
    if (not isinstance(sort, list) or len(sort) != len(responses)
            or not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in sort)):
        raise DataFormatError(f"{where}: 'sort' must be a list of numbers, one per response "
                              f"({len(responses)} responses)")
    messages = src_tgt_messages(record, src, tgt)
    if pointwise:
        if len(responses) != 1 or sort[0] not in (0, 1):
            raise DataFormatError(f"{where}: a KTO record has one 'response' and 'sort' [1] "
                                  f"(desirable) or [0] (undesirable); got {len(responses)} "
                                  f"responses, sort {sort}")
        return PreferenceRecord(messages, responses[0], desirable=sort[0] == 1)
    if len(responses) < 2:
        raise DataFormatError(f"{where}: a preference record needs at least two responses "
                              f"(got {len(responses)}); for single responses use --align kto")
    best, worst = int(np.argmax(sort)), int(np.argmin(sort))
    if sort[best] == sort[worst]:
        raise DataFormatError(f"{where}: all 'sort' values are equal ({sort[0]}); nothing is "
                              "preferred")
    return PreferenceRecord(messages, responses[best], responses[worst])


def read_preference_jsonl(path: str | Path, pointwise: bool = False,
                          columns: Mapping[str, str] | None = None) -> list[PreferenceRecord]:
    """Records of a data source (a jsonl file, or a Hugging Face ``datasets`` source: parquet,
    arrow, a Hub dataset id); other layouts (TRL's ``prompt``/``chosen``/``rejected``,
    ``prompt``/``completion``/``label``) and ``--data_columns`` mappings are read through
    ``columns``; a malformed record is an error naming file and line (or row)."""
    return read_jsonl(path, lambda record, where: parse_record(record, where, pointwise),
                      empty="no records", columns=columns)


# --- tokenising ----------------------------------------------------------------------------

@dataclass
class Tokenized:
    """``prompt`` ids and response ids; reference log-probs filled by precomputation."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int] | None = None
    desirable: bool = True
    ref_chosen: float | None = None
    ref_rejected: float | None = None  # KTO: the reference log-prob of the KL pair
    kl_completion: list[int] | None = None  # KTO: another example's completion (KL pair)


def split_prompt_response(tokenizer, messages: list[dict], response: str) -> tuple[list[int], list[int]]:
    """Token ids of the prompt and of the response turn (with its end-of-turn tokens),
    rendered exactly as SFT renders the conversation (chat template or plain)."""
    ex = tokenize_conversation(tokenizer, [*messages, {"role": "assistant", "content": response}])
    start = len(ex.labels)
    while start > 0 and ex.labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return ex.input_ids[:start], ex.input_ids[start:]


def _fit(prompt: list[int], responses: list[list[int]], max_length: int):
    """Keep the prompt's end and truncate responses so every sequence fits ``max_length``."""
    longest = max(len(r) for r in responses)
    if len(prompt) + longest <= max_length:
        return prompt, responses
    keep = max(max_length - longest, max_length // 2)
    prompt = prompt[-keep:] if keep else []
    room = max_length - len(prompt)
    return prompt, [r[:room] for r in responses]


def tokenize_records(tokenizer, records: Sequence[PreferenceRecord], max_length: int
                     ) -> list[Tokenized]:
    out = []
    for rec in records:
        prompt, chosen = split_prompt_response(tokenizer, rec.messages, rec.chosen)
        if rec.rejected is None:
            prompt, (chosen,) = _fit(prompt, [chosen], max_length)
            out.append(Tokenized(prompt, chosen, desirable=rec.desirable))
            continue
        prompt2, rejected = split_prompt_response(tokenizer, rec.messages, rec.rejected)
        if prompt2 != prompt:
            raise DataFormatError("the chat template renders the same prompt differently for "
                                  "two responses; cannot share the prompt")
        prompt, (chosen, rejected) = _fit(prompt, [chosen, rejected], max_length)
        out.append(Tokenized(prompt, chosen, rejected))
    return out


# --- packing -------------------------------------------------------------------------------

def pack_sequences(groups: Sequence[Sequence[tuple[list[int], list[int]]]], capacity: int,
                   pad_id: int) -> dict[str, np.ndarray]:
    """Pack groups of ``(prompt, response)`` sequences into rows (a group never splits).

    Sequence ``s`` (numbered in group order) becomes one segment. Returns ``input_ids``,
    ``segment_ids`` (``-1`` = row-end padding), ``position_ids`` ``(R, W)``; and over the
    ``N`` response tokens: ``target_index`` (flat index into ``R*W`` of the position that
    predicts the token), ``target_ids`` and ``target_seq`` (its sequence number), plus
    ``lengths`` ``(S,)`` response tokens per sequence.
    """
    placement: list[tuple[int, int]] = []  # (row, start) of every group, first fit
    room: list[int] = []
    used: list[int] = []
    for group in groups:
        size = sum(len(p) + len(r) for p, r in group)
        for row, free in enumerate(room):
            if size <= free:
                break
        else:
            row = len(room)
            room.append(max(capacity, size))
            used.append(0)
        placement.append((row, used[row]))
        room[row] -= size
        used[row] += size
    n_rows, width = len(room), max(used)
    ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    segments = np.full((n_rows, width), -1, dtype=np.int64)
    positions = np.zeros((n_rows, width), dtype=np.int64)
    lengths = np.zeros(sum(len(g) for g in groups), dtype=np.int64)
    t_index: list[int] = []
    t_ids: list[int] = []
    t_seq: list[int] = []
    seq = 0
    for gi, group in enumerate(groups):
        row, start = placement[gi]
        for prompt, response in group:
            tokens = prompt + response
            end = start + len(tokens)
            ids[row, start:end] = tokens
            segments[row, start:end] = seq
            positions[row, start:end] = np.arange(len(tokens))
            first = start + len(prompt)  # position of the first response token
            # token at position j is predicted by position j - 1 (same segment: j > start)
            for j in range(max(first, start + 1), end):
                t_index.append(row * width + j - 1)
                t_ids.append(tokens[j - start])
                t_seq.append(seq)
            lengths[seq] = end - max(first, start + 1)
            start = end
            seq += 1
    return {"input_ids": ids, "segment_ids": segments, "position_ids": positions,
            "target_index": np.asarray(t_index, dtype=np.int64),
            "target_ids": np.asarray(t_ids, dtype=np.int64),
            "target_seq": np.asarray(t_seq, dtype=np.int64), "lengths": lengths}


def shared_prompt_layout(prompts: Sequence[list[int]], responses: Sequence[list[int]],
                         per_prompt: int, pad_id: int) -> dict[str, np.ndarray]:
    """Prompts left-padded ``(B, Tp)`` and their ``per_prompt`` responses each right-padded
    ``(S = B*per_prompt, Tr)``: response ``s`` follows prompt ``s // per_prompt``. Its first
    token is predicted by the prompt's last position, token ``j`` by response position
    ``j - 1``: ``target_index`` is flat into ``(S, 1 + Tr)``."""
    if any(not p for p in prompts):
        raise DataFormatError("an empty prompt cannot be shared; use --pair_layout packed")
    tp, tr = max(len(p) for p in prompts), max(len(r) for r in responses)
    prompt_ids = np.full((len(prompts), tp), pad_id, dtype=np.int64)
    prompt_mask = np.zeros((len(prompts), tp), dtype=np.int64)
    for i, p in enumerate(prompts):
        prompt_ids[i, tp - len(p):] = p
        prompt_mask[i, tp - len(p):] = 1
    response_ids = np.full((len(responses), tr), pad_id, dtype=np.int64)
    response_mask = np.zeros((len(responses), tr), dtype=np.int64)
    t_index, t_ids, t_seq = [], [], []
    for s, r in enumerate(responses):
        response_ids[s, :len(r)] = r
        response_mask[s, :len(r)] = 1
        t_index += [s * (1 + tr) + j for j in range(len(r))]
        t_ids += r
        t_seq += [s] * len(r)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "response_ids": response_ids,
            "response_mask": response_mask, "responses_per_prompt": per_prompt,
            "target_index": np.asarray(t_index, dtype=np.int64),
            "target_ids": np.asarray(t_ids, dtype=np.int64),
            "target_seq": np.asarray(t_seq, dtype=np.int64),
            "lengths": np.asarray([len(r) for r in responses], dtype=np.int64)}


PAIR_LAYOUTS = ("auto", "packed", "shared_prompt")


def shared_positions(batch: dict[str, Any]) -> int:
    return batch["prompt_ids"].size + batch["response_ids"].size


def pair_batch(examples: Sequence[Tokenized], capacity: int, pad_id: int,
               layout: str = "packed") -> dict[str, Any]:
    """Sequences ``2i`` (chosen) and ``2i+1`` (rejected) of every pair in one forward:
    ``packed`` (zero padding, segments), ``shared_prompt`` (prompt encoded once) or ``auto``
    (whichever runs fewer token positions: shared prompts win when prompts are long and
    responses short and even)."""
    if layout not in PAIR_LAYOUTS:
        raise ValueError(f"unknown pair layout '{layout}'; valid: {', '.join(PAIR_LAYOUTS)}")
    batch = None
    if layout != "shared_prompt":
        batch = pack_sequences([[(e.prompt, e.chosen), (e.prompt, e.rejected)]
                                for e in examples], capacity, pad_id)
    if layout != "packed":
        shared = shared_prompt_layout([e.prompt for e in examples],
                                      [r for e in examples for r in (e.chosen, e.rejected)],
                                      2, pad_id)
        # auto: the layout that runs fewer token positions through the model
        if batch is None or shared_positions(shared) < batch["input_ids"].size:
            batch = shared
    batch["num_pairs"] = len(examples)
    if all(e.ref_chosen is not None for e in examples):
        batch["ref_chosen_logps"] = np.asarray([e.ref_chosen for e in examples])
        batch["ref_rejected_logps"] = np.asarray([e.ref_rejected for e in examples])
    return batch


def pointwise_batch(examples: Sequence[Tokenized], capacity: int, pad_id: int) -> dict[str, Any]:
    """KTO: sequence ``i`` is example ``i``; ``kl`` packs the mismatched pairs for the KL
    estimate: prompt ``i`` with ``kl_completion`` (fixed per dataset, see the stage), else
    with completion ``i-1`` of the batch (as trl)."""
    batch = pack_sequences([[(e.prompt, e.chosen)] for e in examples], capacity, pad_id)
    shifted = [examples[-1].chosen] + [e.chosen for e in examples[:-1]]
    shifted = [e.kl_completion if e.kl_completion is not None else c
               for e, c in zip(examples, shifted)]
    batch["kl"] = pack_sequences([[(e.prompt, c)] for e, c in zip(examples, shifted)],
                                 capacity, pad_id)
    batch["labels"] = np.asarray([e.desirable for e in examples])
    if all(e.ref_chosen is not None for e in examples):
        batch["ref_logps"] = np.asarray([e.ref_chosen for e in examples])
        batch["ref_kl_logps"] = np.asarray([e.ref_rejected for e in examples])
    return batch
