"""Per-sequence log-probabilities of a batch, in one of two layouts.

* packed (:func:`paddlellm_align.data.pack_sequences`): one forward over rows of
  ``prompt + response`` segments (block-diagonal ``segment_ids``, no padding but at row ends);
  a pair's prompt is encoded twice, inside the same forward.
* shared prompt (:func:`paddlellm_align.data.shared_prompt_batch`): each prompt is encoded
  once (left-padded batch) into an autograd-friendly KV cache, which is repeated for the
  pair's two responses; then both responses run as one right-padded batch over it. Gradients
  flow through the cached keys/values into the prompt's forward.

Only the hidden states of positions that predict a response token go through the vocabulary
projection, and token log-probs are ``-cross_entropy`` (never ``log_softmax`` over the
vocabulary: pathological on CPU, see the Paddle CPU notes).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn.functional as F


class _ConcatKV:
    """A KV-cache layer that concatenates (differentiable, unlike the preallocated cache)."""

    def __init__(self) -> None:
        self.k = self.v = None

    def update(self, k, v):
        if self.k is None:
            self.k, self.v = k, v  # (B, T, Hkv, D)
        else:
            self.k = paddle.concat([self.k, k], axis=1)
            self.v = paddle.concat([self.v, v], axis=1)
        return self.k, self.v

    def __len__(self) -> int:
        return 0 if self.k is None else self.k.shape[1]


class _ConcatCache:
    paged = False

    def __init__(self, num_layers: int) -> None:
        self.layers = [_ConcatKV() for _ in range(num_layers)]

    def __getitem__(self, i: int) -> _ConcatKV:
        return self.layers[i]

    @property
    def seq_length(self) -> int:
        return len(self.layers[0])

    def repeat_rows(self, times: int) -> None:
        """Row ``i`` becomes rows ``times*i .. times*i + times - 1`` (one per response)."""
        for layer in self.layers:
            layer.k = paddle.repeat_interleave(layer.k, times, axis=0)
            layer.v = paddle.repeat_interleave(layer.v, times, axis=0)


def _shared_prompt_logits(model, batch: dict[str, Any]) -> paddle.Tensor:
    """``(N, V)`` response logits of a shared-prompt batch (see the module docstring)."""
    prompt_mask = paddle.to_tensor(batch["prompt_mask"])  # (B, Tp)
    cache = _ConcatCache(len(model.model.layers))
    hidden_p = model.forward_hidden(paddle.to_tensor(batch["prompt_ids"]),
                                    attention_mask=prompt_mask, cache=cache)  # (B, Tp, H)
    k = batch["responses_per_prompt"]
    cache.repeat_rows(k)
    mask = paddle.concat([paddle.repeat_interleave(prompt_mask, k, axis=0),
                          paddle.to_tensor(batch["response_mask"])], axis=1)  # (S, Tp + Tr)
    hidden_r = model.forward_hidden(paddle.to_tensor(batch["response_ids"]),
                                    attention_mask=mask, cache=cache)  # (S, Tr, H)
    last_p = paddle.repeat_interleave(hidden_p[:, -1:], k, axis=0)  # (S, 1, H)
    hidden = paddle.concat([last_p, hidden_r], axis=1)  # (S, 1 + Tr, H): j predicts token j
    index = paddle.to_tensor(batch["target_index"])  # (N,) flat into S*(1+Tr)
    picked = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), index)  # (N, H)
    return model.logits(picked.unsqueeze(0)).squeeze(0)  # (N, V)


def _response_logits(model, packed: dict[str, Any]) -> paddle.Tensor:
    """``(N, V)`` logits of the ``N`` positions that predict response tokens."""
    if "prompt_ids" in packed:
        return _shared_prompt_logits(model, packed)
    ids = paddle.to_tensor(packed["input_ids"])  # (R, W)
    kwargs = {"segment_ids": paddle.to_tensor(packed["segment_ids"]),
              "position_ids": paddle.to_tensor(packed["position_ids"])}
    index = paddle.to_tensor(packed["target_index"])  # (N,) flat into R*W
    if hasattr(model, "forward_hidden") and hasattr(model, "logits"):
        hidden = model.forward_hidden(ids, **kwargs)  # (R, W, H)
        picked = paddle.gather(hidden.reshape([-1, hidden.shape[-1]]), index)  # (N, H)
        return model.logits(picked.unsqueeze(0)).squeeze(0)  # (N, V)
    logits = model(ids, **kwargs)  # a wrapped model (DataParallel): (R, W, V)
    logits = getattr(logits, "logits", logits)
    return paddle.gather(logits.reshape([-1, logits.shape[-1]]), index)  # (N, V)


def sequence_logps(model, packed: dict[str, Any]) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``(logps (S,), token_logps (N,))``: summed response log-probs of every sequence."""
    logits = _response_logits(model, packed).astype("float32")  # (N, V)
    targets = paddle.to_tensor(packed["target_ids"])  # (N,)
    token_logps = -F.cross_entropy(logits, targets, reduction="none").reshape([-1])  # (N,)
    n_seq = len(packed["lengths"])
    onehot = (packed["target_seq"][None, :] == np.arange(n_seq)[:, None]).astype("float32")
    logps = paddle.matmul(paddle.to_tensor(onehot), token_logps.unsqueeze(-1)).squeeze(-1)  # (S,)
    return logps, token_logps


def pair_logps(model, batch: dict[str, Any]) -> dict[str, paddle.Tensor]:
    """Policy values of a pair batch: chosen/rejected logps and lengths ``(P,)`` and the
    mean NLL over chosen tokens (a scalar)."""
    logps, _ = sequence_logps(model, batch)  # (2P,) chosen, rejected interleaved
    lengths = batch["lengths"]
    chosen_nll = -logps[0::2].sum() / max(int(lengths[0::2].sum()), 1)
    return {"chosen_logps": logps[0::2], "rejected_logps": logps[1::2],
            "chosen_lengths": paddle.to_tensor(lengths[0::2]),
            "rejected_lengths": paddle.to_tensor(lengths[1::2]), "chosen_nll": chosen_nll}


def point_logps(model, batch: dict[str, Any]) -> dict[str, paddle.Tensor]:
    """Policy values of a KTO batch: ``logps (B,)``, the KL pairs' logps (no gradient) and
    the mean NLL over desirable tokens."""
    logps, _ = sequence_logps(model, batch)  # (B,)
    with paddle.no_grad():
        kl_logps, _ = sequence_logps(model, batch["kl"])  # (B,)
    desirable = batch["labels"].astype(bool)
    n_tokens = int(batch["lengths"][desirable].sum())
    mask = paddle.to_tensor(desirable.astype("float32"))
    chosen_nll = -(logps * mask).sum() / max(n_tokens, 1)
    return {"logps": logps, "kl_logps": kl_logps.detach(), "labels": paddle.to_tensor(desirable),
            "chosen_nll": chosen_nll}


def reference_values(ref_forward, batch: dict[str, Any], pointwise: bool) -> dict[str, paddle.Tensor]:
    """Reference log-probs: precomputed ones from the batch, else ``ref_forward(packed)``
    (a no-grad forward of the frozen copy or of the model with adapters disabled)."""
    if pointwise:
        if "ref_logps" in batch:
            return {"ref_logps": paddle.to_tensor(batch["ref_logps"], dtype="float32"),
                    "ref_kl_logps": paddle.to_tensor(batch["ref_kl_logps"], dtype="float32")}
        return {"ref_logps": ref_forward(batch), "ref_kl_logps": ref_forward(batch["kl"])}
    if "ref_chosen_logps" in batch:
        return {"ref_chosen_logps": paddle.to_tensor(batch["ref_chosen_logps"], dtype="float32"),
                "ref_rejected_logps": paddle.to_tensor(batch["ref_rejected_logps"], dtype="float32")}
    logps = ref_forward(batch)  # (2P,)
    return {"ref_chosen_logps": logps[0::2], "ref_rejected_logps": logps[1::2]}
