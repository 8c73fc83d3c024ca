"""Speculative decoding for the engine: drafters (the plugin point) and exact verification.

A *drafter* proposes up to ``k`` tokens that may follow a sequence; the engine feeds the
sequence's new token plus the drafts through the model in the same forward as every other
running sequence (one flattened row over the paged cache) and reads the logits at every
draft position. Verification is exact, so speculation never changes what is generated:

* greedy requests keep the longest prefix of drafts equal to the target's greedy choices,
  then add the target's own next token (always at least one token per step);
* sampled requests use speculative rejection sampling against the drafter's deterministic
  (one-hot) distribution: draft ``x`` is kept with probability ``p(x)`` (``p``: the
  request's processed target distribution -- penalty, temperature, top-k, top-p); on a
  rejection the token is drawn from ``p`` with ``x`` removed and renormalised, which makes
  every emitted token distributed exactly as plain sampling would (Leviathan et al. 2023).

PaddleNLP's ``--speculate_verify_window`` / ``--speculate_max_candidate_len`` tune its
*TopP + window* verification, an approximate rule; this engine always verifies exactly
(the rules above), so those two options are validated and recorded but change nothing.

Drafters are registered by name in :data:`DRAFTERS` (:func:`register_drafter`); the built-in
``inference_with_reference`` is n-gram prompt lookup (the seed's method, vLLM's ``ngram``).
A draft-model drafter is another entry: any object with ``propose(seq_tokens, k) ->
list[int]`` built by a factory that receives the :class:`SpeculativeConfig` and the engine's
model; a plugin registers it at import time with :func:`register_drafter`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np

from ..modeling.generation import _softmax, check_logits, filter_top_k_top_p, scale_by_temperature

SPECULATE_METHODS_OFF = (None, "", "None", "none")


@runtime_checkable
class Drafter(Protocol):
    """Proposes draft tokens for one sequence."""

    def propose(self, seq_tokens: list[int], k: int) -> list[int]:
        """Up to ``k`` tokens that may follow ``seq_tokens`` (prompt + output so far)."""
        ...


@dataclass
class SpeculativeConfig:
    """The seed's speculation options (``--speculate_*``)."""

    method: str
    max_draft_token_num: int = 1
    max_ngram_size: int = 1
    verify_window: int = 2  # PaddleNLP's TopP + window verify; exact verification here
    max_candidate_len: int = 5  # likewise

    def __post_init__(self) -> None:
        for name in ("max_draft_token_num", "max_ngram_size", "verify_window",
                     "max_candidate_len"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"speculate_{name} must be >= 1, got {getattr(self, name)}")


class NgramDrafter:
    """Prompt lookup (``inference_with_reference``): match the last ``n`` tokens, ``n`` from
    ``max_ngram_size`` down to 1, against the earlier tokens of the sequence (prompt + text
    so far) and propose the tokens that followed the most recent match."""

    def __init__(self, max_ngram_size: int = 1) -> None:
        if max_ngram_size < 1:
            raise ValueError(f"max_ngram_size must be >= 1, got {max_ngram_size}")
        self.max_ngram_size = int(max_ngram_size)

    def propose(self, seq_tokens: list[int], k: int) -> list[int]:
        toks = np.asarray(seq_tokens, dtype=np.int64)
        length = toks.size
        if k < 1 or length < 2:
            return []
        for n in range(min(self.max_ngram_size, length - 1), 0, -1):
            pattern = toks[length - n:]
            # windows starting at 0 .. length-n-1: each has at least one following token
            windows = np.lib.stride_tricks.sliding_window_view(toks[:length - 1], n)
            hits = np.flatnonzero((windows == pattern).all(axis=1))
            if hits.size:
                start = int(hits[-1]) + n
                return toks[start:start + k].tolist()
        return []


#: drafter name -> factory(config, model) -> Drafter
DRAFTERS: dict[str, Callable[[SpeculativeConfig, Any], Drafter]] = {}


def register_drafter(name: str, factory: Callable[[SpeculativeConfig, Any], Drafter]) -> None:
    """Make ``--speculate_method name`` build its drafter with ``factory(config, model)``."""
    if name in DRAFTERS:
        raise ValueError(f"a drafter named '{name}' is already registered")
    DRAFTERS[name] = factory


register_drafter("inference_with_reference", lambda cfg, model: NgramDrafter(cfg.max_ngram_size))


def make_drafter(config: SpeculativeConfig, model: Any = None) -> Drafter:
    factory = DRAFTERS.get(config.method)
    if factory is None:
        raise ValueError(f"unknown speculate_method '{config.method}'; valid: None, "
                         f"{', '.join(sorted(DRAFTERS))}")
    drafter = factory(config, model)
    if not isinstance(drafter, Drafter):
        raise TypeError(f"drafter '{config.method}' has no propose(seq_tokens, k) method")
    return drafter


def target_probs(row: np.ndarray, temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """The sampling distribution ``(V,)`` float64 of a processed logits row, exactly as
    :func:`paddlellm.engine.sampling.sample_row` samples from it."""
    scores = filter_top_k_top_p(scale_by_temperature(row[None], temperature), top_k, top_p)
    check_logits(scores)
    with np.errstate(invalid="ignore"):
        return _softmax(scores.astype(np.float64))[0]


def accept_or_resample(probs: np.ndarray, draft: int, rng: np.random.Generator) -> tuple[int, bool]:
    """One rejection-sampling test of a one-hot draft: ``(token, accepted)``. Keeps ``draft``
    with probability ``probs[draft]``; otherwise draws from ``probs`` without ``draft``."""
    if rng.random() < probs[draft]:
        return draft, True
    rest = probs.copy()
    rest[draft] = 0.0
    rest /= rest.sum()  # > 0: probs[draft] < 1 or the draft would have been kept
    u = rng.random()
    idx = int((np.cumsum(rest) < u).sum())
    idx = min(idx, rest.size - 1)
    while rest[idx] == 0.0 and idx > 0:  # cumsum rounding at the tail: last kept token
        idx -= 1
    return idx, False
