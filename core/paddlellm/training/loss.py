"""Token-level losses. Per the CPU notes, never ``log_softmax`` over the vocabulary:
``cross_entropy`` is ~100x faster there and numerically the same."""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_loss(logits: paddle.Tensor, labels: paddle.Tensor) -> tuple[paddle.Tensor, int]:
    """Mean next-token loss and the number of target tokens.

    ``logits (B, T, V)`` predict ``labels (B, T)`` shifted by one; ``IGNORE_INDEX`` labels
    (prompts, padding, sequence boundaries) do not count.
    """
    vocab = logits.shape[-1]
    shift_logits = logits[:, :-1].reshape([-1, vocab])  # (B*(T-1), V)
    shift_labels = labels[:, 1:].reshape([-1])  # (B*(T-1),)
    count = int((shift_labels != IGNORE_INDEX).sum())
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX,
                            reduction="sum")
    return total / max(count, 1), count


def batch_loss(model, batch: dict) -> tuple[paddle.Tensor, int]:
    """:func:`causal_lm_loss` of ``model`` on a NumPy batch: ``input_ids`` and ``labels``,
    plus ``attention_mask`` (padded batches) or ``segment_ids`` and ``position_ids`` (packed
    batches) when present."""
    kwargs = {}
    if "attention_mask" in batch:
        kwargs["attention_mask"] = paddle.to_tensor(batch["attention_mask"])
    if "segment_ids" in batch:
        kwargs["segment_ids"] = paddle.to_tensor(batch["segment_ids"])
        kwargs["position_ids"] = paddle.to_tensor(batch["position_ids"])
    from ..modeling.peft import batch_context

    with batch_context(model, batch):  # a PEFT method may need the labels (ReFT's prompts)
        logits = model(paddle.to_tensor(batch["input_ids"]), **kwargs)
    logits = getattr(logits, "logits", logits)
    return causal_lm_loss(logits, paddle.to_tensor(batch["labels"]))
