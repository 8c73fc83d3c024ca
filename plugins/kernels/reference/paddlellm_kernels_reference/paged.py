"""Paged attention for the reference kernel (``cache="paged"``), exact in float32.

The flattened new tokens of ``S`` sequences are written into the pool, then every sequence's
queries are gathered into a padded ``(S, Tq, Hq, D)`` batch and its keys (through the block
table) into ``(S, Tk, Hkv, D)``; dense grouped-query attention with one additive mask runs on
that, and the real rows are gathered back. Index and mask tensors are built once per call
(in ``cache.scratch``) and reused by every layer. A pure decode step (one query per
sequence) or a single sequence needs no query gather at all.
"""
from __future__ import annotations

import numpy as np
import paddle
import paddle.nn.functional as F

_LOW_PRECISION = ("float16", "bfloat16")


def _indices(cache, sliding_window: int | None, prefix_lens=None) -> dict:
    """Gather indices and the additive mask of this call (computed once, by the first layer)."""
    key = ("reference", sliding_window, tuple(prefix_lens) if prefix_lens is not None else None)
    if key in cache.scratch:
        return cache.scratch[key]
    s_count, tq, tk = len(cache.query_lens), cache.max_query_len, cache.max_context_len
    q_lens = np.asarray(cache.query_lens, dtype=np.int64)  # (S,)
    ctx = np.asarray(cache.context_lens_host, dtype=np.int64)  # (S,)
    starts = np.asarray(cache.query_start, dtype=np.int64)  # (S,)
    i = np.arange(tq, dtype=np.int64)[None, :]  # (1, Tq)
    j = np.arange(tk, dtype=np.int64)[None, None, :]  # (1, 1, Tk)
    real_q = i < q_lens[:, None]  # (S, Tq)
    pos = (ctx - q_lens)[:, None] + i  # (S, Tq) key position of each query
    seen = j <= pos[:, :, None]  # (S, Tq, Tk) causal
    if prefix_lens is not None:  # prefix-LM: each sequence's context is visible to all queries
        seen = seen | (j < np.asarray(prefix_lens, dtype=np.int64)[:, None, None])
    visible = seen & (j < ctx[:, None, None])  # (S, Tq, Tk)
    if sliding_window is not None:
        visible &= (pos[:, :, None] - j) < sliding_window
    out: dict = {"pos": pos}
    if tq > 1 and s_count > 1:  # gather queries into padded rows; pad rows read token 0, dropped
        out["q_index"] = paddle.to_tensor(np.where(real_q, starts[:, None] + i, 0).reshape(-1))
        out["out_index"] = paddle.to_tensor(
            np.concatenate([s * tq + np.arange(n) for s, n in enumerate(q_lens)]))  # (N,)
    # keys: slot of token t of sequence s (padding reads slot 0, masked out)
    bs = cache.block_size
    tables = cache.block_tables.numpy()  # (S, max_blocks), host copy once per call
    t = np.arange(tk, dtype=np.int64)[None, :]  # (1, Tk)
    blocks = np.take_along_axis(tables, np.minimum(t // bs, tables.shape[1] - 1).repeat(s_count, 0),
                                axis=1)  # (S, Tk)
    slots = np.where(t < ctx[:, None], blocks * bs + t % bs, 0)
    out["kv_index"] = paddle.to_tensor(slots.reshape(-1))  # (S*Tk,)
    out["all_visible"] = bool(visible.all())
    if not out["all_visible"]:
        bias = np.where(visible, 0.0, np.finfo(np.float32).min).astype(np.float32)
        out["bias"] = paddle.to_tensor(bias[:, None, None])  # (S, 1, 1, Tq, Tk)
    cache.scratch[key] = out
    return out


def paged_attention(q, k, v, cache, *, sliding_window=None, alibi_slopes=None, scale=None,
                    softcap=None, prefix_lens=None) -> paddle.Tensor:
    """``q (1, N, Hq, D)``, ``k``/``v`` ``(1, N, Hkv, D)`` -> ``(1, N, Hq, D)``."""
    cache.write(k, v)
    idx = _indices(cache, sliding_window, prefix_lens)
    n, q_heads, head_dim = q.shape[1], q.shape[2], q.shape[3]
    kv_heads = k.shape[2]
    if q_heads % kv_heads:
        raise ValueError(f"query heads ({q_heads}) must be a multiple of kv heads ({kv_heads})")
    groups = q_heads // kv_heads
    s_count, tq, tk = len(cache.query_lens), cache.max_query_len, cache.max_context_len
    scale = head_dim ** -0.5 if scale is None else scale
    upcast = str(q.dtype).replace("paddle.", "") in _LOW_PRECISION

    qf = q.reshape([n, q_heads, head_dim])  # (N, Hq, D)
    if "q_index" in idx:  # several sequences of different lengths
        qf = paddle.index_select(qf, idx["q_index"], axis=0)  # (S*Tq, Hq, D)
    if tq == 1:  # decode: (S, 1, Hkv, G, D) is already (S, Hkv, G, D), no copy
        qh = qf.reshape([s_count, kv_heads, groups, head_dim])
    else:  # (S, Tq, Hkv, G, D) -> (S, Hkv, G*Tq, D)
        qh = qf.reshape([s_count, tq, kv_heads, groups, head_dim]).transpose([0, 2, 3, 1, 4])
        qh = qh.reshape([s_count, kv_heads, groups * tq, head_dim])
    if hasattr(cache, "gather_kv"):  # a quantized pool (int8 KV) dequantizes what it gathers
        kh, vh = cache.gather_kv(idx["kv_index"])  # (S*Tk, Hkv, D) each
    else:
        kh = paddle.index_select(cache.key_pool, idx["kv_index"], axis=0)  # (S*Tk, Hkv, D)
        vh = paddle.index_select(cache.value_pool, idx["kv_index"], axis=0)  # (S*Tk, Hkv, D)
    kh = kh.reshape([s_count, tk, kv_heads, head_dim]).transpose([0, 2, 1, 3])  # (S, Hkv, Tk, D)
    vh = vh.reshape([s_count, tk, kv_heads, head_dim]).transpose([0, 2, 1, 3])  # (S, Hkv, Tk, D)
    if vh.dtype != q.dtype:
        kh, vh = kh.astype(q.dtype), vh.astype(q.dtype)
    scores = paddle.matmul(qh, kh, transpose_y=True)  # (S, Hkv, G*Tq, Tk)
    if upcast:
        scores = scores.astype("float32")
    scores = scores.reshape([s_count, kv_heads, groups, tq, tk]) * scale
    if softcap:
        scores = paddle.tanh(scores * (1.0 / softcap)) * softcap
    if alibi_slopes is not None:  # slope_h * (j - p_i), per sequence
        key = ("alibi_rel",)
        if key not in cache.scratch:
            rel = np.arange(tk)[None, None, :] - idx["pos"][:, :, None]  # (S, Tq, Tk)
            cache.scratch[key] = paddle.to_tensor(rel.astype(np.float32)[:, None, None])
        slopes = alibi_slopes.astype("float32").reshape([1, kv_heads, groups, 1, 1])
        scores = scores + slopes * cache.scratch[key]
    if not idx["all_visible"]:
        scores = scores + idx["bias"]  # (S, 1, 1, Tq, Tk)
    probs = F.softmax(scores, axis=-1)
    if upcast:
        probs = probs.astype(q.dtype)
    probs = probs.reshape([s_count, kv_heads, groups * tq, tk])
    out = paddle.matmul(probs, vh)  # (S, Hkv, G*Tq, D)
    if tq == 1:  # (S, Hkv, G, D) is (N, Hq, D)
        return out.reshape([1, n, q_heads, head_dim])
    out = out.reshape([s_count, kv_heads, groups, tq, head_dim]).transpose([0, 3, 1, 2, 4])
    out = out.reshape([s_count * tq, q_heads, head_dim])  # (S*Tq, Hq, D)
    if "out_index" in idx:
        out = paddle.index_select(out, idx["out_index"], axis=0)  # (N, Hq, D)
    return out.reshape([1, n, q_heads, head_dim])
