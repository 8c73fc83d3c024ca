"""Perplexity on held-out text: ``exp(mean token negative log-likelihood)``.

Each text (plus EOS) is one sequence; batches are right-padded and the padding is left out
of the mean (right padding never changes the logits of earlier tokens under causal attention).
Log-probabilities come from ``cross_entropy(reduction="none")`` (``log_softmax`` over the
vocabulary is pathologically slow on Paddle CPU).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np


def perplexity(model: Any, sequences: list[list[int]], batch_size: int = 16,
               max_length: int | None = None) -> float:
    """Perplexity of ``model`` on token-id ``sequences`` (each at least two tokens used)."""
    import paddle
    import paddle.nn.functional as F

    max_length = max_length or getattr(model.config, "max_position_embeddings", None) or 2048
    seqs = [s[:max_length] for s in sequences if len(s) >= 2]
    if not seqs:
        raise ValueError("perplexity needs at least one sequence of two or more tokens")
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        with paddle.no_grad():
            for i in range(0, len(seqs), batch_size):
                chunk = seqs[i:i + batch_size]
                width = max(len(s) for s in chunk)
                ids = np.zeros((len(chunk), width), dtype=np.int64)
                mask = np.zeros((len(chunk), width - 1), dtype=np.float32)
                for r, s in enumerate(chunk):
                    ids[r, :len(s)] = s
                    mask[r, :len(s) - 1] = 1.0
                # a quantized KV cache (a8w8c8) only acts through the cache: prefill into one
                cache = (model.new_cache(len(chunk), width)
                         if getattr(model, "kv_cache_quant", None) else None)
                logits = model(paddle.to_tensor(ids), cache=cache)[:, :-1].astype("float32")  # (B, T-1, V)
                labels = paddle.to_tensor(ids[:, 1:]).unsqueeze(-1)  # (B, T-1, 1)
                nll = F.cross_entropy(logits, labels, reduction="none").squeeze(-1)  # (B, T-1)
                total_nll += float((nll * paddle.to_tensor(mask)).sum())
                total_tokens += int(mask.sum())
    finally:
        if was_training:
            model.train()
    return math.exp(total_nll / total_tokens)
