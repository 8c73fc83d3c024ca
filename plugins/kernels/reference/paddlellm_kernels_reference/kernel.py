"""Reference attention: plain Paddle matmul + softmax, exact in float32.

Implements the full contract of :class:`paddlellm.interfaces.AttentionKernel` (causal,
padding, sliding window, ALiBi, grouped/multi-query heads, packed-sequence segments,
soft-capping, a contiguous KV cache, a paged KV cache in :mod:`.paged`). Grouped heads are
computed without repeating keys: queries are folded to ``(B, Hkv, G*Tq, D)`` so each kv
head is read once.
"""
from __future__ import annotations

import paddle
import paddle.nn.functional as F

from paddlellm.interfaces import AttentionSpec

from .paged import paged_attention

_LOW_PRECISION = ("float16", "bfloat16")


def _dtype_name(t: paddle.Tensor) -> str:
    return str(t.dtype).replace("paddle.", "")


def visibility_mask(
    batch: int,
    q_len: int,
    k_len: int,
    *,
    causal: bool,
    attention_mask: paddle.Tensor | None = None,
    sliding_window: int | None = None,
    segment_ids: paddle.Tensor | None = None,
    context_keys: paddle.Tensor | None = None,
) -> paddle.Tensor | None:
    """Boolean ``(B or 1, Tq, Tk)`` mask, True where a query may see a key; None = all."""
    offset = k_len - q_len
    mask = None
    if (causal and q_len > 1) or sliding_window is not None:
        q_pos = paddle.arange(q_len, dtype="int64").unsqueeze(1) + offset  # (Tq, 1)
        k_pos = paddle.arange(k_len, dtype="int64").unsqueeze(0)  # (1, Tk)
        if causal:
            mask = (k_pos <= q_pos).unsqueeze(0)  # (1, Tq, Tk)
            if context_keys is not None:  # prefix-LM: the context is visible to every query
                mask = paddle.logical_or(mask, context_keys.astype("bool").unsqueeze(1))  # (B, Tq, Tk)
        if sliding_window is not None:
            window = ((q_pos - k_pos) < sliding_window).unsqueeze(0)
            mask = window if mask is None else paddle.logical_and(mask, window)
    if attention_mask is not None:
        keys = attention_mask.astype("bool").unsqueeze(1)  # (B, 1, Tk)
        mask = keys if mask is None else paddle.logical_and(mask, keys)
    if segment_ids is not None:
        seg_q = segment_ids[:, offset:].unsqueeze(2)  # (B, Tq, 1)
        same = seg_q == segment_ids.unsqueeze(1)  # (B, Tq, Tk)
        mask = same if mask is None else paddle.logical_and(mask, same)
    if mask is not None and mask.shape[1] != q_len:  # (B, 1, Tk) padding-only masks
        mask = paddle.expand(mask, [mask.shape[0], q_len, k_len])
    return mask


def alibi_bias(slopes: paddle.Tensor, q_len: int, k_len: int) -> paddle.Tensor:
    """``(Hq, Tq, Tk)`` with ``slope_h * (j - p_i)``."""
    offset = k_len - q_len
    rel = (paddle.arange(k_len, dtype="float32").unsqueeze(0)
           - (paddle.arange(q_len, dtype="float32") + offset).unsqueeze(1))  # (Tq, Tk)
    return slopes.astype("float32").reshape([-1, 1, 1]) * rel.unsqueeze(0)


class ReferenceAttention:
    name = "reference"
    backends = ("*",)
    priority = 0

    def supports(self, spec: AttentionSpec) -> bool:
        return (spec.cache in ("none", "contiguous", "paged") and spec.dtype in ("float32", *_LOW_PRECISION)
                and not (spec.cache == "paged" and (spec.padding_mask or spec.segments)))

    def __call__(
        self,
        q: paddle.Tensor,
        k: paddle.Tensor,
        v: paddle.Tensor,
        *,
        causal: bool = True,
        attention_mask: paddle.Tensor | None = None,
        sliding_window: int | None = None,
        alibi_slopes: paddle.Tensor | None = None,
        segment_ids: paddle.Tensor | None = None,
        scale: float | None = None,
        softcap: float | None = None,
        cache=None,
        context_keys: paddle.Tensor | None = None,
        prefix_lens: list[int] | None = None,
    ) -> paddle.Tensor:
        if getattr(cache, "paged", False):  # many sequences in one flattened row
            if attention_mask is not None or segment_ids is not None:
                raise ValueError("paged attention takes no attention_mask or segment_ids")
            return paged_attention(q, k, v, cache, sliding_window=sliding_window,
                                   alibi_slopes=alibi_slopes, scale=scale, softcap=softcap,
                                   prefix_lens=prefix_lens)
        if cache is not None:
            k, v = cache.update(k, v)
        batch, q_len, q_heads, head_dim = q.shape
        k_len, kv_heads = k.shape[1], k.shape[2]
        if q_heads % kv_heads:
            raise ValueError(f"query heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
        groups = q_heads // kv_heads
        scale = head_dim ** -0.5 if scale is None else scale
        out_dtype = q.dtype
        upcast = _dtype_name(q) in _LOW_PRECISION

        # (B, Tq, Hkv, G, D) -> (B, Hkv, G*Tq, D): query heads of one kv head side by side
        qh = q.reshape([batch, q_len, kv_heads, groups, head_dim]).transpose([0, 2, 3, 1, 4])
        qh = qh.reshape([batch, kv_heads, groups * q_len, head_dim])
        kh = k.transpose([0, 2, 1, 3])  # (B, Hkv, Tk, D)
        vh = v.transpose([0, 2, 1, 3])  # (B, Hkv, Tk, D)
        scores = paddle.matmul(qh, kh, transpose_y=True)  # (B, Hkv, G*Tq, Tk)
        if upcast:
            scores = scores.astype("float32")
        scores = scores.reshape([batch, kv_heads, groups, q_len, k_len]) * scale
        if softcap:
            scores = paddle.tanh(scores * (1.0 / softcap)) * softcap
        if alibi_slopes is not None:  # (Hq, Tq, Tk) -> (1, Hkv, G, Tq, Tk)
            bias = alibi_bias(alibi_slopes, q_len, k_len)
            scores = scores + bias.reshape([1, kv_heads, groups, q_len, k_len])

        mask = visibility_mask(batch, q_len, k_len, causal=causal, attention_mask=attention_mask,
                               sliding_window=sliding_window, segment_ids=segment_ids,
                               context_keys=context_keys)
        if mask is not None:
            mask5 = mask.unsqueeze(1).unsqueeze(1)  # (B|1, 1, 1, Tq, Tk)
            hidden = paddle.logical_not(mask5).astype(scores.dtype)
            scores = scores + hidden * paddle.finfo(scores.dtype).min
        probs = F.softmax(scores, axis=-1)
        if mask is not None:  # a query that sees no key attends to nothing
            any_visible = mask5.any(axis=-1, keepdim=True).astype(probs.dtype)
            probs = probs * any_visible
        if upcast:
            probs = probs.astype(out_dtype)
        probs = probs.reshape([batch, kv_heads, groups * q_len, k_len])
        out = paddle.matmul(probs, vh)  # (B, Hkv, G*Tq, D)
        out = out.reshape([batch, kv_heads, groups, q_len, head_dim]).transpose([0, 3, 1, 2, 4])
        return out.reshape([batch, q_len, q_heads, head_dim])


kernel = ReferenceAttention()
