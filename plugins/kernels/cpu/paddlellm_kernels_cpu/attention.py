"""Compiled paged attention for the serving engine's block cache (``cache="paged"``).

Each new token's query heads read their sequence's keys and values straight from the pools
through the block table (no gather of the cache into a dense batch, no mask tensors): one
operator call per layer, which also writes the new keys/values into the engine's float pool. Grouped-query heads of one kv
head are computed together so each cached key/value row is read once; (token, kv head)
items are spread over threads when there is enough work. Float32, causal, with sliding
windows and soft-capping; a call outside that (ALiBi, a pool stored in another format such
as int8 KV with ``gather_kv``, a non-float32 pool) is passed to the ``reference`` kernel.
"""
from __future__ import annotations

import numpy as np
import paddle

from paddlellm.api import PagedLayer, get_attention_kernel
from paddlellm.interfaces import AttentionSpec

from . import build
from .linear import _no_bias


class CpuPagedAttention:
    name = "cpu"
    backends = ("cpu",)
    priority = 10

    def supports(self, spec: AttentionSpec) -> bool:
        """Paged float32 inference calls without ALiBi; True only once the library is built."""
        return (spec.cache == "paged" and spec.dtype == "float32" and spec.causal
                and not (spec.training or spec.alibi or spec.padding_mask or spec.segments
                         or spec.prefix)
                and build.ops() is not None)

    def info(self) -> dict:
        """For ``llm doctor``: built or not (and why), instruction set, threads."""
        return build.info()

    def __call__(self, q, k, v, *, causal=True, attention_mask=None, sliding_window=None,
                 alibi_slopes=None, segment_ids=None, scale=None, softcap=None, cache=None):
        if not getattr(cache, "paged", False):
            raise ValueError("the 'cpu' attention kernel serves paged-cache calls only "
                             "(cache=PagedKVCacheLayer); it declines other specs in supports()")
        if attention_mask is not None or segment_ids is not None:
            raise ValueError("paged attention takes no attention_mask or segment_ids")
        ops = build.ops()
        if (ops is None or alibi_slopes is not None or not causal or hasattr(cache, "gather_kv")
                or q.dtype != paddle.float32 or cache.key_pool.dtype != paddle.float32):
            return self._reference(q)(q, k, v, causal=causal, sliding_window=sliding_window,
                                      alibi_slopes=alibi_slopes, scale=scale, softcap=softcap,
                                      cache=cache)
        # the engine's plain float pool: the operator writes k/v itself (saves ~6 dispatches
        # per layer); a pool with its own write() gets that first
        fused_write = type(cache).write is PagedLayer.write and k.dtype == paddle.float32
        if not fused_write:
            cache.write(k, v)
        head_dim = q.shape[-1]
        scale = head_dim ** -0.5 if scale is None else float(scale)
        out = ops.plk_paged_attention(
            q, k, v, cache.key_pool, cache.value_pool, cache.slot_mapping, cache.block_tables,
            _seq_info(cache), scale, float(softcap or 0.0), int(sliding_window or 0),
            int(cache.block_size), build.num_threads(), build.isa_code(), fused_write)
        return out[0]  # (1, N, Hq, D); the pools were updated in place

    #: most rows a fused decoder-layer call takes with any projections (decode steps)
    MAX_LAYER_ROWS = 64
    #: most rows with float32 projections when MKL's GEMM serves them (prefills: the layer's
    #: norms, rotary and SiLU in compiled loops instead of ~15 Paddle operators; bounded so
    #: that its intermediates, rows x intermediate size floats, stay moderate)
    MAX_PREFILL_ROWS = 4096

    def decoder_layer(self, x, weights, biases, cos, sin, *, cache, eps, num_heads, scale=None,
                      softcap=None, sliding_window=None, scales=None, bits=32, group_size=-1):
        """A whole pre-norm decoder layer of the Llama shape for a decode step in one operator
        call, or None ("not this call": the layer runs its own modules).

        ``x`` ``(1, N, H)`` float32; ``weights`` ``[input norm, Wq, Wk, Wv, Wo, post-attention
        norm, Wgate, Wup, Wdown]`` (``(in, out)`` like ``nn.Linear``); ``biases`` ``[bq, bk, bv,
        bo]`` (None for none); ``cos``/``sin`` ``(N, D)`` rotary tables of the rows (``sin``
        signed ``[-s, s]``); ``cache`` the engine's paged layer (the new keys/values are written
        into its float pools). RMSNorm without offset, full rotary in rotate-half layout, SiLU
        gate: the caller checks its layer is that (see the models plugin's ``DecoderLayer``).
        Weight-only projections: ``scales`` lists the seven projections' scales (None for a
        float one, whose weight is then ``(in, out)``), the weight is the quant storage
        (``WeightOnlyLinearKernel``'s), ``bits`` 8 or 4 and ``group_size`` shared by all."""
        ops = build.ops()
        rows = x.shape[0] * x.shape[1]
        # many rows with weight-only projections: the layer's dequantize + GEMM is faster (scales
        # given with bits 32 are declined by _prepared_weights below)
        if rows > self.MAX_LAYER_ROWS and (rows > self.MAX_PREFILL_ROWS or bits != 32
                                           or not build.blas()):
            return None
        if (ops is None or x.dtype != paddle.float32
                or not getattr(cache, "paged", False) or hasattr(cache, "gather_kv")
                or type(cache).write is not PagedLayer.write
                or cache.key_pool.dtype != paddle.float32):
            return None
        head_dim = cache.key_pool.shape[-1]
        if cos.shape[-1] != head_dim:
            return None
        prepared = self._prepared_weights(weights, biases, scales, bits)
        if prepared is None or cos.dtype != paddle.float32 or sin.dtype != paddle.float32:
            return None  # e.g. a bfloat16 model: not this call
        weights, biases, scales = prepared
        scale = head_dim ** -0.5 if scale is None else float(scale)
        out = ops.plk_decoder_layer(
            x, weights, biases, scales, cos, sin,
            cache.key_pool, cache.value_pool, cache.slot_mapping, cache.block_tables,
            _seq_info(cache), float(eps), scale, float(softcap or 0.0), int(sliding_window or 0),
            int(cache.block_size), int(num_heads), int(bits), int(group_size), build.num_threads(),
            build.isa_code())
        return out[0]

    def _prepared_weights(self, weights, biases, scales, bits):
        """``(weights, biases, scales)`` as the operator takes them (lists, the empty tensor for
        None), or None where a float tensor is not float32 or the quantization is not int8/int4.
        Remembered per argument tuple (the models plugin passes the same ones every step)."""
        key = (id(weights), id(biases), id(scales), bits)
        memo = self.__dict__.setdefault("_prepared", {})
        if not all(isinstance(t, tuple) for t in (weights, biases, scales)):
            memo = {}  # lists may change between calls: checked every time
        hit = memo.get(key)
        if hit is not None and hit[0] is weights and hit[1] is biases and hit[2] is scales:
            return hit[3]
        scales_l = list(scales) if scales is not None else [None] * 7
        quantized = any(sc is not None for sc in scales_l)
        floats = [w for i, w in enumerate(weights) if i in (0, 5) or scales_l[i - 1 - (i > 5)] is None]
        floats += [b for b in biases if b is not None]
        if ((quantized and (bits not in (8, 4) or any(sc is not None and sc.dtype != paddle.float32
                                                      for sc in scales_l)))
                or any(t.dtype != paddle.float32 for t in floats)):
            prepared = None
        else:
            empty = _no_bias()
            prepared = (list(weights), [empty if b is None else b for b in biases],
                        [empty if sc is None else sc for sc in scales_l])
        if len(memo) >= 256:  # bounded: models come and go in one process
            memo.clear()
        # the argument objects are kept with the entry, so their ids are not reused while it lives
        memo[key] = (weights, biases, scales, prepared)
        return prepared

    @staticmethod
    def _reference(q):
        spec = AttentionSpec(dtype=str(q.dtype).replace("paddle.", ""), head_dim=q.shape[-1],
                             cache="paged")
        return get_attention_kernel(spec, name="reference", backend="cpu")


def _seq_info(cache) -> paddle.Tensor:
    """``(S, 3)`` int64: query start, query length, context length of each sequence; built once
    per call by the first layer (``cache.scratch``)."""
    key = ("cpu", "seq_info")
    if key not in cache.scratch:
        info = np.stack([np.asarray(cache.query_start, np.int64),
                         np.asarray(cache.query_lens, np.int64),
                         np.asarray(cache.context_lens_host, np.int64)], axis=1)
        cache.scratch[key] = paddle.to_tensor(info)
    return cache.scratch[key]


kernel = CpuPagedAttention()
