"""Per-request sampling: parameters, outputs, logits processing and stop handling.

The arithmetic is that of :func:`paddlellm.modeling.generation.generate` (HF repetition penalty,
temperature, top-k then top-p, one uniform draw per token from ``numpy.random.default_rng
(seed)``), so a seeded request samples the same tokens as ``generate`` with that seed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..modeling.generation import (NonFiniteLogitsError, _sample, check_logits, filter_top_k_top_p,
                                   scale_by_temperature)

FINISH_REASONS = ("stop", "length", "abort")



@dataclass
class SamplingParams:
    """How one request decodes. ``temperature=0`` is greedy; ``logprobs=k`` returns the
    chosen token's log-probability and the ``k`` most likely (0 = only the chosen one)."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]
        self.stop_token_ids = [int(t) for t in self.stop_token_ids]
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if self.logprobs is not None and self.logprobs < 0:
            raise ValueError(f"logprobs must be >= 0 or None, got {self.logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def needs_logits(self) -> bool:
        """Whether the host needs the full logits row (anything but plain greedy)."""
        return not self.greedy or self.repetition_penalty != 1.0 or self.logprobs is not None


@dataclass
class RequestOutput:
    """What one :meth:`LLMEngine.step` produced for one request (incremental)."""

    request_id: str
    new_token_ids: list[int]
    new_text: str
    finished: bool
    finish_reason: str | None
    logprobs: list[dict] | None
    num_prompt_tokens: int
    num_output_tokens: int


def repetition_penalty(row: np.ndarray, ids: list[int], penalty: float) -> np.ndarray:
    """HF semantics on a ``(V,)`` row: seen tokens' logits divided (>0) or multiplied (<0)."""
    if penalty == 1.0:
        return row
    row = row.copy()
    seen = np.unique(np.asarray(ids, dtype=np.int64))
    vals = row[seen]
    row[seen] = np.where(vals < 0, vals * np.float32(penalty), vals / np.float32(penalty))
    return row


def token_logprobs(row: np.ndarray, token: int, top: int) -> dict[str, Any]:
    """``{"token_id", "logprob", "top": [(id, logprob), ...]}`` from raw logits ``(V,)``."""
    x = row.astype(np.float64)
    lse = x.max() + np.log(np.exp(x - x.max()).sum())
    best: list[tuple[int, float]] = []
    if top:
        idx = np.argpartition(-x, min(top, x.size) - 1)[:top]
        idx = idx[np.argsort(-x[idx], kind="stable")]
        best = [(int(i), float(x[i] - lse)) for i in idx]
    return {"token_id": int(token), "logprob": float(x[token] - lse), "top": best}


def sample_row(row: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """One token from a processed ``(V,)`` float32 logits row (penalty already applied);
    :class:`NonFiniteLogitsError` when the row has NaN/+inf (never a silent token 0)."""
    if params.greedy:
        check_logits(row[None])
        return int(np.argmax(row))
    scores = scale_by_temperature(row[None], params.temperature)  # (1, V), as generate
    return int(_sample(filter_top_k_top_p(scores, params.top_k, params.top_p), rng)[0])


class StopTracker:
    """Streams a request's text and detects stop strings.

    Text that could be the start of a stop string is held back, so what has been emitted
    never contains (part of) a stop string; at a stop the text is cut before it.
    """

    def __init__(self, tokenizer, prompt_ids: list[int], stop: list[str]) -> None:
        self.stop = list(stop)
        self._detok = None
        if tokenizer is not None:
            from ..tokenizer import IncrementalDetokenizer

            self._detok = IncrementalDetokenizer(tokenizer, prompt_ids=prompt_ids)
        elif self.stop:
            raise ValueError("stop strings need a tokenizer")
        self.text = ""
        self.emitted = 0
        self._longest = max((len(s) for s in self.stop), default=0)

    def _advance(self, final: bool) -> tuple[str, bool]:
        stopped = False
        if self.stop:
            start = max(self.emitted - self._longest, 0)
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:max(min(hits), self.emitted)]
                stopped = final = True
        end = len(self.text)
        if not final and self.stop:  # hold back a suffix that may begin a stop string
            for n in range(min(self._longest - 1, end - self.emitted), 0, -1):
                tail = self.text[end - n:]
                if any(s.startswith(tail) for s in self.stop):
                    end -= n
                    break
        delta = self.text[self.emitted:end]
        self.emitted = end
        return delta, stopped

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a generated token; ``(printable text, hit a stop string)``."""
        if self._detok is None:
            return "", False
        self.text += self._detok.push(token_id)
        return self._advance(final=False)

    def finish(self) -> str:
        """The rest of the text at the end of the request (stop strings still cut)."""
        if self._detok is None:
            return ""
        self.text += self._detok.flush()
        return self._advance(final=True)[0]


def next_token_logprobs(logits: np.ndarray, targets: list[int], top: int) -> list[dict[str, Any]]:
    """``{"token_id", "logprob", "top"}`` of ``targets[i]`` under logits row ``i`` (``(R, V)``),
    as :func:`token_logprobs` computes them, for many rows at once. A token's logprob and the
    top ones come from the same array, so "is the token the greedy one" is an exact test."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lp = x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))
    k = min(top, lp.shape[1]) if top else 0
    best = np.argpartition(-lp, k - 1, axis=1)[:, :k] if k else None
    out: list[dict[str, Any]] = []
    for i, token in enumerate(targets):
        row = lp[i]
        tops: list[tuple[int, float]] = []
        if k:
            idx = best[i][np.argsort(-row[best[i]], kind="stable")]
            tops = [(int(j), float(row[j])) for j in idx]
        out.append({"token_id": int(token), "logprob": float(row[token]), "top": tops})
    return out

