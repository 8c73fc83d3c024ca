"""Yuan 2.0's Localized Filtering-based Attention: the attention block and the ``yuan_lfa``
KV-cache layout that keeps the filter state beside the keys and values.

The filter of layer input ``x`` (``(B, T, H)``, after ``input_layernorm``) at position ``t``::

    o1[t] = conv1(x[t-1], x[t])            # (H/2,), kernel 2, zero before the sequence
    o2[t] = conv2(o1[t-1], o1[t])          # (H,),   o1[-1] = 0 (the padding of conv2)
    out[t] = rmsnorm(o2[t] + x[t])         # eps 1e-6

so a decoding step needs ``x`` at the two previous positions. Published Yuan caches those
two rows per sequence; here every cached position keeps its row (the contiguous cache's
``(B, 2 + max_length, H)`` buffer, or a ``(num_slots, H)`` pool per layer addressed by
the paged cache's block tables). That costs ``H`` values per token and layer beside the
keys and values (half again the KV memory of a multi-head model; the layout's
``extra_bytes_per_token`` makes the engine's block budget count it), and in return whatever the engine does with blocks — chunked
prefill, speculative rollback, preemption by recomputation, beam forks with
copy-on-write — keeps the filter state right with no bookkeeping of its own: it is freed
with the sequence's blocks.

Positions that are not the sequence's own — left padding (``attention_mask`` 0), another
packed segment, or before the start — count as zeros, so a padded row, a packed segment and
the engine's unpadded sequence all filter like the sequence alone.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from paddlellm.api import KVCache, LayerKVCache

from .config import ModelConfig
from .decoder import Attention, CausalLM, Norm, _const_attr, _weight_attr

LAYOUT_NAME = "yuan_lfa"
LF_NORM_EPS = 1e-6  # published: LlamaRMSNorm's default, not the config's rms_norm_eps


class CausalConv2(nn.Layer):
    """A kernel-2 convolution over the sequence in the published ``Conv2d(in, out, (2, 1))``
    layout: ``weight (out, in, 2, 1)``, ``bias (out,)``; ``y[t] = W[..., 0] x[t-1] + W[..., 1] x[t] + b``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.n_in, self.n_out = n_in, n_out
        self.weight = self.create_parameter([n_out, n_in, 2, 1], attr=_weight_attr())
        self.bias = self.create_parameter([n_out], attr=_const_attr(0.0), is_bias=True)

    def forward(self, prev: paddle.Tensor, cur: paddle.Tensor) -> paddle.Tensor:
        pair = paddle.stack([prev, cur], axis=-1)  # (..., in, 2)
        pair = pair.reshape([*pair.shape[:-2], self.n_in * 2])  # (..., 2 * in), k fastest
        w, b = self.weight, self.bias
        if w.dtype != pair.dtype:  # low-precision storage, float32 compute
            w, b = w.astype(pair.dtype), b.astype(pair.dtype)
        return paddle.matmul(pair, w.reshape([self.n_out, self.n_in * 2]), transpose_y=True) + b


def _shift(x: paddle.Tensor, n: int) -> paddle.Tensor:
    """``x`` moved ``n`` positions later along axis 1, zeros in front: ``out[:, t] = x[:, t-n]``."""
    t = x.shape[1]
    if n >= t:
        return paddle.zeros_like(x)
    pad = paddle.zeros([x.shape[0], n, *x.shape[2:]], dtype=x.dtype)
    return paddle.concat([pad, x[:, :t - n]], axis=1)


class LocalizedFiltering(nn.Layer):
    """``lf_gate``: two causal convolutions, the residual and an RMSNorm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.conv1 = CausalConv2(h, h // 2)
        self.conv2 = CausalConv2(h // 2, h)
        self.output_layernorm = Norm(h, config.replace(norm="rms", norm_eps=LF_NORM_EPS,
                                                       norm_unit_offset=False))

    def forward(self, x: paddle.Tensor, mask: paddle.Tensor | None = None,
                segments: paddle.Tensor | None = None, cache: Any = None) -> paddle.Tensor:
        """Filtered ``(B, T, H)``; ``cache`` (a ``yuan_lfa`` layer cache) supplies and keeps the
        inputs of earlier positions."""
        if cache is not None:
            get = getattr(cache, "filter_inputs", None)
            if get is None:
                return self._over_history(x, mask, cache)
            x_m1, x_m2, keep = get(x, mask)  # (B, T, H), (B, T, H), (B, T, 1)
            o1 = self.conv1(x_m1, x)  # (B, T, H/2)
            o1_m1 = self.conv1(x_m2, x_m1) * keep  # (B, T, H/2): o1 one position earlier
            return self.output_layernorm(self.conv2(o1_m1, o1) + x)
        x_m1, x_m2 = _shift(x, 1), _shift(x, 2)  # (B, T, H)
        keep = keep2 = None
        if mask is not None or segments is not None:  # earlier positions of another sequence
            ones = paddle.ones([x.shape[0], x.shape[1]], dtype="bool")
            real = ones if mask is None else mask[:, -x.shape[1]:].astype("bool")  # (B, T)
            keep = _shift(real.unsqueeze(-1), 1)[..., 0] & real  # (B, T)
            keep2 = _shift(real.unsqueeze(-1), 2)[..., 0] & real
            if segments is not None:
                seg = segments.unsqueeze(-1)
                keep = keep & (_shift(seg, 1)[..., 0] == segments)
                keep2 = keep2 & (_shift(seg, 2)[..., 0] == segments) & keep
            keep = keep.astype(x.dtype).unsqueeze(-1)  # (B, T, 1)
            x_m1 = x_m1 * keep
            x_m2 = x_m2 * keep2.astype(x.dtype).unsqueeze(-1)
        o1 = self.conv1(x_m1, x)  # (B, T, H/2)
        o1_m1 = _shift(o1, 1)  # zero at t = 0: conv2's padding
        if keep is not None:
            o1_m1 = o1_m1 * keep
        return self.output_layernorm(self.conv2(o1_m1, o1) + x)


    def _over_history(self, x: paddle.Tensor, mask: paddle.Tensor | None, cache: Any) -> paddle.Tensor:
        """A plain appending cache of someone else's (the alignment stage's differentiable
        shared-prompt cache): the layer's inputs so far are kept on it and the filter runs over
        all of them (rows repeated the way that cache repeats a prompt's rows). Caches that
        reorder rows or page them must keep the state themselves (``yuan_lfa``)."""
        if getattr(cache, "paged", False) or hasattr(cache, "reorder"):
            raise ValueError(
                f"yuan: localized filtering needs the '{LAYOUT_NAME}' KV-cache layout (it keeps "
                f"the filter state of every sequence); this cache is a {type(cache).__name__} "
                "(an int8 KV cache cannot be used with Yuan)")
        past = getattr(cache, "yuan_filter_inputs", None)  # (B0, Tp, H)
        if past is not None and past.shape[0] != x.shape[0]:
            if x.shape[0] % past.shape[0]:
                raise ValueError(f"yuan: {x.shape[0]} rows after {past.shape[0]} cached rows")
            past = paddle.repeat_interleave(past, x.shape[0] // past.shape[0], axis=0)
        full = x if past is None else paddle.concat([past, x], axis=1)  # (B, Tp + T, H)
        cache.yuan_filter_inputs = full
        if mask is not None and mask.shape[1] < full.shape[1]:
            raise ValueError("yuan: the attention mask must cover the cached positions")
        return self.forward(full, None if mask is None else mask[:, -full.shape[1]:])[:, -x.shape[1]:]


class YuanAttention(Attention):
    """The decoder's attention with Yuan's filtered queries/keys and its head split."""

    def __init__(self, config: ModelConfig) -> None:
        if config.fused_qkv or config.num_kv_heads != config.num_heads:
            raise ValueError("yuan attention has separate q/k/v projections and no grouped heads")
        super().__init__(config)
        self.lf_gate = LocalizedFiltering(config)

    def projection_groups(self, input_norm: Any) -> list[tuple[Any, list[str]]]:
        """``(norm or None, [projection names])`` of the projections that read one norm's
        output alone (what AWQ/SmoothQuant may fold a scale into): ``q_proj``/``k_proj`` read
        the filter's ``output_layernorm``; ``v_proj`` shares the layer's input norm with the
        filter's convolutions, so no scale can be folded there."""
        return [(self.lf_gate.output_layernorm if input_norm is not None else None,
                 ["q_proj", "k_proj"]), (None, ["v_proj"])]

    def _qkv(self, x: paddle.Tensor, ctx: dict[str, Any] | None = None, cache=None):
        b, t, h, d = x.shape[0], x.shape[1], self.num_heads, self.head_dim
        ctx = ctx or {}
        v = self.v_proj(x).reshape([b, t, h, d])  # values from the unfiltered input
        f = self.lf_gate(x, ctx.get("mask"), ctx.get("segments"), cache)  # (B, T, H*D)
        qk = paddle.concat([self.q_proj(f), self.k_proj(f)], axis=-1)  # (B, T, 2*H*D)
        qk = qk.reshape([b, t, h, 2 * d])  # published: heads cut from [q; k], q first in each
        return qk[..., :d], qk[..., d:], v  # (B, T, H, D) each


def build_yuan(config: ModelConfig, family: Any) -> CausalLM:
    """The configurable decoder with :class:`YuanAttention` in every layer (call inside
    :func:`~paddlellm_models.decoder.build_context`)."""
    model = CausalLM(config, family=family)
    for layer in model.model.layers:
        layer.self_attn = YuanAttention(config)
    model.kv_cache_layout = LAYOUT_NAME
    return model


# --- the contiguous cache (generate) ------------------------------------------------------------

class YuanLayerKVCache(LayerKVCache):
    """Keys/values of one layer plus the filter inputs of every position ``(B, 2 + L, H)``
    (two leading zero rows: the positions before the sequence)."""

    def __init__(self, batch: int, max_length: int, kv_heads: int, head_dim: int, hidden: int,
                 dtype: str = "float32") -> None:
        super().__init__(batch, max_length, kv_heads, head_dim, dtype)
        self.inputs = paddle.zeros([batch, 2 + max_length, hidden], dtype=dtype)
        self.filter_length = 0  # filter inputs written (positions of real tokens)
        self.filter_offset = None  # KV positions before the first filter input (a tuned prefix)

    def filter_inputs(self, x: paddle.Tensor, mask: paddle.Tensor | None):
        """Store ``x`` (``(B, T, H)``) and return the inputs one and two positions earlier and
        whether ``o1`` one position earlier exists (``(B, T, 1)``)."""
        b, t = x.shape[0], x.shape[1]
        if self.filter_offset is None:
            self.filter_offset = self.length
        p = self.filter_length
        if 2 + p + t > self.inputs.shape[1]:
            raise ValueError(f"KV cache overflow: {p + t} positions > capacity {self.max_length}")
        self.inputs[:, 2 + p:2 + p + t] = x.astype(self.inputs.dtype)
        self.filter_length = p + t
        ext = self.inputs[:, p:p + t + 2].astype(x.dtype)  # (B, T + 2, H): positions p-2 .. p+t-1
        x_m2, x_m1 = ext[:, :t], ext[:, 1:t + 1]
        pos = np.arange(p, p + t)
        keep = paddle.to_tensor((pos >= 1).astype("float32")).reshape([1, t, 1]).astype(x.dtype)
        if mask is not None:  # (B, Tk): the last T + 2 columns are positions p-2 .. p+t-1
            m = mask.astype(x.dtype)
            if m.shape[1] < t + 2:
                m = paddle.concat([paddle.zeros([b, t + 2 - m.shape[1]], dtype=x.dtype), m], axis=1)
            m = m[:, -(t + 2):].unsqueeze(-1)  # (B, T + 2, 1)
            real = m[:, 2:]
            keep = keep * m[:, 1:t + 1] * real
            x_m1 = x_m1 * keep
            x_m2 = x_m2 * (m[:, :t] * keep)
        return x_m1, x_m2, keep

    def reorder(self, index: paddle.Tensor) -> None:
        super().reorder(index)
        self.inputs = paddle.index_select(self.inputs, index, axis=0)

    def crop(self, length: int) -> None:
        super().crop(length)
        if self.filter_offset is not None:
            self.filter_length = max(0, min(self.filter_length, length - self.filter_offset))


class YuanKVCache(KVCache):
    """One :class:`YuanLayerKVCache` per layer."""

    def __init__(self, num_layers: int, batch: int, max_length: int, kv_heads: int,
                 head_dim: int, hidden: int, dtype: str = "float32") -> None:
        self.layers = [YuanLayerKVCache(batch, max_length, kv_heads, head_dim, hidden, dtype)
                       for _ in range(num_layers)]


# --- the engine's paged cache ------------------------------------------------------------------

def _paged_classes():
    """Subclasses of the engine's paged cache with one filter-input pool per layer (built on
    first use: the engine is core)."""
    from paddlellm.api import PagedKVCache, PagedLayer

    class YuanPagedLayer(PagedLayer):
        """A layer's paged view plus its ``(num_slots, H)`` filter-input pool."""

        def __init__(self, batch, key_pool, value_pool, filter_pool) -> None:
            super().__init__(batch, key_pool, value_pool)
            self.filter_pool = filter_pool

        def filter_inputs(self, x: paddle.Tensor, mask: paddle.Tensor | None):
            if mask is not None:
                raise ValueError("the paged cache takes no attention_mask")
            meta = self.batch.scratch["yuan_lfa"]
            rows = x[0]  # (N, H)
            parts = [rows]
            if meta["prev_slots"] is not None:  # inputs of earlier calls, (M, H)
                parts.append(paddle.gather(self.filter_pool, meta["prev_slots"], axis=0).astype(x.dtype))
            parts.append(paddle.zeros([1, rows.shape[1]], dtype=x.dtype))  # before the start
            source = paddle.concat(parts, axis=0)  # (N + M + 1, H)
            x_m1 = paddle.gather(source, meta["m1"], axis=0)  # (N, H)
            x_m2 = paddle.gather(source, meta["m2"], axis=0)
            paddle.scatter_(self.filter_pool, self.batch.slot_mapping,
                            rows.astype(self.filter_pool.dtype), overwrite=True)
            return x_m1[None], x_m2[None], meta["keep"].astype(x.dtype)

    class YuanPagedKVCache(PagedKVCache):
        """The engine's paged key/value pools plus a filter-input pool per layer, addressed by
        the same slots (so the state follows the blocks: freed, forked and copied with them)."""

        supports_block_copy = True

        def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                     head_dim: int, dtype: str = "float32", hidden: int = 0) -> None:
            super().__init__(num_layers, num_blocks, block_size, kv_heads, head_dim, dtype)
            self.hidden = hidden
            slots = num_blocks * block_size
            self.filter_pools = [paddle.zeros([slots, hidden], dtype=dtype) for _ in range(num_layers)]

        @property
        def nbytes(self) -> int:
            per = {"float32": 4, "float64": 8}.get(self.dtype, 2)
            return super().nbytes + self.num_layers * self.num_blocks * self.block_size * self.hidden * per

        def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
            super().copy_blocks(pairs)
            if not pairs:
                return
            bs = self.block_size
            src = np.concatenate([np.arange(a * bs, (a + 1) * bs) for a, _ in pairs])
            dst = np.concatenate([np.arange(b * bs, (b + 1) * bs) for _, b in pairs])
            src_t, dst_t = paddle.to_tensor(src), paddle.to_tensor(dst)
            for pool in self.filter_pools:
                paddle.scatter_(pool, dst_t, paddle.gather(pool, src_t), overwrite=True)

        def batch(self, seq_ids, cached, new):
            view = super().batch(seq_ids, cached, new)
            view._layers = [YuanPagedLayer(view, k, v, f) for k, v, f in
                            zip(self.key_pools, self.value_pools, self.filter_pools)]
            view.scratch["yuan_lfa"] = self._filter_meta(seq_ids, cached, new)
            return view

        def _filter_meta(self, seq_ids, cached, new) -> dict:
            """Where each new token's inputs one and two positions earlier come from: this
            call's rows ``0..N-1``, pool rows gathered from earlier calls ``N..N+M-1``, or the
            zero row ``N+M`` (before the sequence's start)."""
            n = int(sum(new))
            prev: list[int] = []
            prev_index: dict[tuple[int, int], int] = {}
            m1, m2, keep = [], [], []
            refs = []  # per token: ("x", row) | ("pool", key) | ("zero",)

            def source(s: int, c: int, row0: int, pos: int):
                if pos < 0:
                    return ("zero",)
                if pos >= c:
                    return ("x", row0 + pos - c)
                key = (s, pos)
                if key not in prev_index:
                    prev_index[key] = len(prev)
                    prev.append(int(self.blocks.slots(seq_ids[s], pos, pos + 1)[0]))
                return ("pool", prev_index[key])

            row0 = 0
            for s, (c, k) in enumerate(zip(cached, new)):
                for j in range(k):
                    pos = c + j
                    refs.append((source(s, c, row0, pos - 1), source(s, c, row0, pos - 2)))
                    keep.append(1.0 if pos >= 1 else 0.0)
                row0 += k
            zero = n + len(prev)

            def index(ref) -> int:
                return ref[1] if ref[0] == "x" else n + ref[1] if ref[0] == "pool" else zero

            for r1, r2 in refs:
                m1.append(index(r1))
                m2.append(index(r2))
            return {"prev_slots": paddle.to_tensor(np.asarray(prev, dtype=np.int64)) if prev else None,
                    "m1": paddle.to_tensor(np.asarray(m1, dtype=np.int64)),
                    "m2": paddle.to_tensor(np.asarray(m2, dtype=np.int64)),
                    "keep": paddle.to_tensor(np.asarray(keep, dtype=np.float32)).reshape([1, n, 1])}

    return YuanPagedKVCache


class YuanLFALayout:
    """The ``yuan_lfa`` KV-cache layout (:class:`paddlellm.interfaces.KVCacheLayout`): float
    keys/values plus each position's filter input, contiguous for ``generate`` and paged
    for the serving engine."""

    name = LAYOUT_NAME

    def __repr__(self) -> str:
        return f"<kv cache layout {self.name}>"

    def storage_dtype(self, model: Any) -> str:
        return model.dtype

    def extra_bytes_per_token(self, model: Any) -> int:
        """The filter inputs the paged pool keeps per token (every layer), for the engine's budget."""
        per = {"float32": 4, "float64": 8}.get(model.dtype, 2)
        return model.config.num_layers * model.config.hidden_size * per

    def new_cache(self, model: Any, batch: int, max_length: int, dtype: str) -> YuanKVCache:
        c = model.config
        return YuanKVCache(c.num_layers, batch, max_length, c.num_kv_heads, c.head_dim,
                           c.hidden_size, dtype)

    def new_paged_cache(self, model: Any, num_layers: int, num_blocks: int, block_size: int,
                        kv_heads: int, head_dim: int, dtype: str):
        return _paged_classes()(num_layers, num_blocks, block_size, kv_heads, head_dim, dtype,
                                hidden=model.config.hidden_size)


YUAN_LFA = YuanLFALayout()
