"""Held-out metrics that need generation: exact match of greedy answers."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """The prompt a chat model answers: the chat template with the generation prompt, or
    the plain question for tokenizers without a template."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": question}]
        return list(tokenizer.apply_chat_template(messages, tokenize=True,
                                                  add_generation_prompt=True))
    return tokenizer.encode(question, add_special_tokens=True)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """``(input_ids, attention_mask)`` with left padding, as generation expects."""
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, width - len(r):] = r
        mask[i, width - len(r):] = 1
    return ids, mask


def generate_answers(model: Any, tokenizer: Any, questions: Sequence[str], *,
                     batch_size: int = 32, max_new_tokens: int = 16) -> list[str]:
    """Greedy answers (special tokens dropped, whitespace stripped)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    answers: list[str] = []
    for start in range(0, len(questions), batch_size):
        rows = [prompt_ids(tokenizer, q) for q in questions[start:start + batch_size]]
        ids, mask = left_pad(rows, pad)
        out = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                             decode_strategy="greedy_search",
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
        new = np.asarray(out.numpy() if hasattr(out, "numpy") else out)[:, ids.shape[1]:]
        answers += [tokenizer.decode(row.tolist(), skip_special_tokens=True).strip()
                    for row in new]
    if was_training:
        model.train()
    return answers


def exact_match(model: Any, tokenizer: Any, examples: Sequence[dict], *, batch_size: int = 32,
                max_new_tokens: int = 16, samples: int = 3) -> dict[str, Any]:
    """Fraction of ``{"src", "tgt"}`` examples whose greedy answer equals ``tgt`` (and per
    ``task`` when the examples name one)."""
    answers = generate_answers(model, tokenizer, [e["src"] for e in examples],
                               batch_size=batch_size, max_new_tokens=max_new_tokens)
    hits = [a == e["tgt"].strip() for a, e in zip(answers, examples)]
    by_task: dict[str, list[bool]] = {}
    for hit, e in zip(hits, examples):
        if "task" in e:
            by_task.setdefault(e["task"], []).append(hit)
    return {
        "exact_match": float(np.mean(hits)) if hits else 0.0,
        "count": len(hits),
        "by_task": {task: round(float(np.mean(v)), 4) for task, v in by_task.items()},
        "samples": [{"src": e["src"], "tgt": e["tgt"], "got": a}
                    for e, a in list(zip(examples, answers))[:samples]],
    }
