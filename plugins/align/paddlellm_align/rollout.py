"""A rollout batch and the per-token quantities RLHF losses read from it.

A rollout is ``B`` prompts (left-padded) with one sampled completion each (right-padded):
:class:`RolloutBatch`. The policy, the reference and the value head are all run on the same
``prompt + completion`` layout; the hidden state at position ``Tp - 1 + t`` predicts
completion token ``t``, so log-probabilities and values come out ``(B, Tc)``, aligned with
``completion_mask`` — the shapes :mod:`paddlellm_align.rl_losses` takes (trl's slicing
``[:, context_length - 1 : -1]``).

Token log-probabilities are ``-cross_entropy`` of the completion positions only (never
``log_softmax`` over the whole vocabulary and sequence: pathological on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import paddle
import paddle.nn.functional as F


@dataclass
class RolloutBatch:
    """``prompt_ids``/``prompt_mask`` ``(B, Tp)`` left-padded; ``completion_ids``/
    ``completion_mask`` ``(B, Tc)`` right-padded (int64 NumPy arrays)."""

    prompt_ids: np.ndarray
    prompt_mask: np.ndarray
    completion_ids: np.ndarray
    completion_mask: np.ndarray

    @classmethod
    def from_lists(cls, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                   pad_id: int) -> "RolloutBatch":
        """From token-id lists, one completion per prompt (repeat a prompt for a group)."""
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts for {len(completions)} completions")
        if any(not p for p in prompts):
            raise ValueError("a rollout prompt is empty: the first completion token has no "
                             "position to be predicted from")
        tp = max(len(p) for p in prompts)
        tc = max(max(len(c) for c in completions), 1)
        b = len(prompts)
        prompt_ids = np.full((b, tp), pad_id, dtype=np.int64)
        prompt_mask = np.zeros((b, tp), dtype=np.int64)
        completion_ids = np.full((b, tc), pad_id, dtype=np.int64)
        completion_mask = np.zeros((b, tc), dtype=np.int64)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            prompt_ids[i, tp - len(p):] = p
            prompt_mask[i, tp - len(p):] = 1
            completion_ids[i, :len(c)] = c
            completion_mask[i, :len(c)] = 1
        return cls(prompt_ids, prompt_mask, completion_ids, completion_mask)

    def model_inputs(self) -> tuple[paddle.Tensor, paddle.Tensor]:
        """``(B, Tp + Tc)`` input ids and attention mask."""
        ids = np.concatenate([self.prompt_ids, self.completion_ids], axis=1)
        mask = np.concatenate([self.prompt_mask, self.completion_mask], axis=1)
        return paddle.to_tensor(ids), paddle.to_tensor(mask)

    def mask(self, dtype: str = "float32") -> paddle.Tensor:
        return paddle.to_tensor(self.completion_mask).astype(dtype)


def _completion_slice(hidden: paddle.Tensor, batch: RolloutBatch) -> paddle.Tensor:
    tp, tc = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return hidden[:, tp - 1: tp - 1 + tc]  # (B, Tc, H): position Tp-1+t predicts token t


def completion_logprobs(model: Any, batch: RolloutBatch, temperature: float = 1.0,
                        with_entropy: bool = False) -> Any:
    """``(B, Tc)`` log-probabilities of the completion tokens under ``model`` (a causal LM),
    sampled at ``temperature``; with ``with_entropy``, also the ``(B, Tc)`` entropies of the
    predicted distributions. Gradients flow when enabled; padding positions hold garbage
    (mask them)."""
    from .rl_losses import entropy_from_logits

    ids, mask = batch.model_inputs()
    hidden = _completion_slice(model.forward_hidden(ids, mask), batch)  # (B, Tc, H)
    logits = model.logits(hidden)  # (B, Tc, V)
    if temperature != 1.0:
        logits = logits / temperature
    targets = paddle.to_tensor(batch.completion_ids)
    b, tc, v = logits.shape
    logps = -F.cross_entropy(logits.reshape([b * tc, v]).astype("float32"),
                             targets.reshape([b * tc, 1]), reduction="none").reshape([b, tc])
    if with_entropy:
        return logps, entropy_from_logits(logits.astype("float32"))
    return logps


def completion_values(value_model: Any, batch: RolloutBatch) -> paddle.Tensor:
    """``(B, Tc)`` values of the states before each completion token, from a
    :class:`~paddlellm_align.reward_model.RewardModel` used as the value head (trl's
    ``value = full_value[:, context_length - 1 : -1]``)."""
    ids, mask = batch.model_inputs()
    tp, tc = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return value_model.token_scores(ids, mask)[:, tp - 1: tp - 1 + tc]
