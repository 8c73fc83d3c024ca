"""Int8 KV cache: keys and values stored as int8 with float32 scales.

* **static** (``a8w8c8``, PaddleNLP's cachekv int8): one scale per KV head for keys and one
  for values, ``absmax / 127`` over calibration data (keys after RoPE, as cached); kept in
  the checkpoint as ``model.layers.{i}.self_attn.cache_scales.k_scale`` / ``.v_scale``
  ``(Hkv,)`` (a small :class:`KVCacheScales` sublayer of each attention layer).
* **dynamic**: a scale per token and head, ``absmax over head_dim / 127``, computed when the
  token is written and stored beside it (``(B, L, Hkv, 1)`` float32: 4 bytes per 128-wide
  head = +3% over int8).

:class:`Int8LayerKVCache` follows :class:`paddlellm.interfaces.KVCacheLayer` like the core's
contiguous :class:`paddlellm.modeling.kv_cache.LayerKVCache`: ``update`` quantizes the new keys/values
into preallocated int8 buffers and returns the dequantized cache for the attention kernel.
:func:`enable_int8_kv_cache` sets the model's ``kv_cache_layout`` to the registered layout
``int8_static`` or ``int8_dynamic`` (:class:`Int8KVCacheLayout`), so ``model.generate`` gets
an int8 cache (through ``model.new_cache``) and the serving engine an int8 paged pool
(through ``model.new_paged_cache``; the attention kernel reads it with the pool's
``gather_kv``), budgeted in int8 bytes (``model.kv_cache_dtype``).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import paddle
import paddle.nn as nn
from paddlellm.api import KVCache, LayerKVCache

from .a8w8 import int8_scale, quantize_int8
from .layers import QuantizedLayer

KV_MODES = ("static", "dynamic")


class KVCacheScales(QuantizedLayer):
    """Static KV-cache scales of one attention layer: ``k_scale``, ``v_scale`` ``(Hkv,)``."""

    bits = 8

    def __init__(self, kv_heads: int) -> None:
        super().__init__()
        self.register_buffer("k_scale", paddle.ones([kv_heads], dtype="float32"))
        self.register_buffer("v_scale", paddle.ones([kv_heads], dtype="float32"))

    def forward(self, *args: Any) -> None:
        raise TypeError("KVCacheScales holds scales for the int8 KV cache; it is not called")


class Int8LayerKVCache:
    """One layer's int8 keys/values ``(B, max_length, Hkv, D)`` with static ``(Hkv,)`` scales
    or dynamic per-token ``(B, max_length, Hkv, 1)`` scales."""

    def __init__(self, batch: int, max_length: int, kv_heads: int, head_dim: int,
                 dtype: str = "float32", k_scale: paddle.Tensor | None = None,
                 v_scale: paddle.Tensor | None = None) -> None:
        if (k_scale is None) != (v_scale is None):
            raise ValueError("give both k_scale and v_scale (static) or neither (dynamic)")
        self.dtype = dtype
        self.k = paddle.zeros([batch, max_length, kv_heads, head_dim], dtype="int8")
        self.v = paddle.zeros([batch, max_length, kv_heads, head_dim], dtype="int8")
        self.static = k_scale is not None
        if self.static:
            self.k_scale = k_scale.astype("float32").reshape([1, 1, kv_heads, 1])  # (1, 1, Hkv, 1)
            self.v_scale = v_scale.astype("float32").reshape([1, 1, kv_heads, 1])
        else:
            self.k_scale = paddle.ones([batch, max_length, kv_heads, 1], dtype="float32")
            self.v_scale = paddle.ones([batch, max_length, kv_heads, 1], dtype="float32")
        self.length = 0

    @property
    def max_length(self) -> int:
        return self.k.shape[1]

    def __len__(self) -> int:
        return self.length

    def nbytes(self) -> int:
        """Bytes held by the int8 buffers and their scales."""
        tensors = [self.k, self.v] + ([] if self.static else [self.k_scale, self.v_scale])
        return sum(int(t.size) * (1 if t.dtype == paddle.int8 else 4) for t in tensors)

    def update(self, k: paddle.Tensor, v: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
        """Quantize and append ``(B, T, Hkv, D)``; return all ``(B, Tk, Hkv, D)`` dequantized."""
        start, end = self.length, self.length + k.shape[1]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_length}")
        k32, v32 = k.astype("float32"), v.astype("float32")
        if self.static:
            ks, vs = self.k_scale, self.v_scale
        else:  # per token and head
            ks = int8_scale(k32.abs().max(axis=-1, keepdim=True))  # (B, T, Hkv, 1)
            vs = int8_scale(v32.abs().max(axis=-1, keepdim=True))
            self.k_scale[:, start:end] = ks
            self.v_scale[:, start:end] = vs
        self.k[:, start:end] = quantize_int8(k32, ks)
        self.v[:, start:end] = quantize_int8(v32, vs)
        self.length = end
        return self._dequantize(end)

    def _dequantize(self, end: int) -> tuple[paddle.Tensor, paddle.Tensor]:
        ks = self.k_scale if self.static else self.k_scale[:, :end]
        vs = self.v_scale if self.static else self.v_scale[:, :end]
        k = self.k[:, :end].astype("float32") * ks  # (B, Tk, Hkv, D)
        v = self.v[:, :end].astype("float32") * vs
        return k.astype(self.dtype), v.astype(self.dtype)

    def reorder(self, index: paddle.Tensor) -> None:
        """Keep batch rows ``index`` (beam search); ``gather``: CPU index_select has no int8 kernel."""
        self.k = paddle.gather(self.k, index, axis=0)
        self.v = paddle.gather(self.v, index, axis=0)
        if not self.static:
            self.k_scale = paddle.gather(self.k_scale, index, axis=0)
            self.v_scale = paddle.gather(self.v_scale, index, axis=0)

    def crop(self, length: int) -> None:
        """Forget positions from ``length`` on (speculative decoding rollback)."""
        self.length = min(self.length, length)


class Int8KVCache(KVCache):
    """One :class:`Int8LayerKVCache` per layer (``scales``: per layer ``(k, v)`` or None)."""

    def __init__(self, num_layers: int, batch: int, max_length: int, kv_heads: int,
                 head_dim: int, dtype: str = "float32",
                 scales: list[tuple[paddle.Tensor, paddle.Tensor]] | None = None) -> None:
        if scales is not None and len(scales) != num_layers:
            raise ValueError(f"{len(scales)} static KV scale pairs for {num_layers} layers")
        self.layers = [Int8LayerKVCache(batch, max_length, kv_heads, head_dim, dtype,
                                        *(scales[i] if scales is not None else (None, None)))
                       for i in range(num_layers)]

    def nbytes(self) -> int:
        return sum(layer.nbytes() for layer in self.layers)


class _RecordingLayer(LayerKVCache):
    """A float cache layer that records ``absmax`` per KV head of what is written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.k_absmax = self.v_absmax = None

    def update(self, k, v):
        km = k.astype("float32").abs().max(axis=[0, 1, 3]).numpy()  # (Hkv,)
        vm = v.astype("float32").abs().max(axis=[0, 1, 3]).numpy()
        self.k_absmax = km if self.k_absmax is None else np.maximum(self.k_absmax, km)
        self.v_absmax = vm if self.v_absmax is None else np.maximum(self.v_absmax, vm)
        return super().update(k, v)


def calibrate_kv_scales(model: nn.Layer, calibration: Iterable[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per layer ``(k_absmax, v_absmax)`` ``(Hkv,)`` over the calibration sequences, run one
    sequence at a time through a recording cache (so padding never counts)."""
    from .calibration import calibration_batches

    c = model.config
    records: list[_RecordingLayer] | None = None
    with paddle.no_grad():
        for ids, mask in calibration_batches(calibration):
            for row in range(ids.shape[0]):
                seq = ids[row] if mask is None else ids[row][mask[row].astype("bool")]
                if seq.shape[0] == 0:
                    continue
                cache = KVCache(0, 1, seq.shape[0], c.num_kv_heads, c.head_dim)
                cache.layers = [_RecordingLayer(1, seq.shape[0], c.num_kv_heads, c.head_dim)
                                for _ in range(c.num_layers)]
                model(seq.unsqueeze(0), cache=cache)
                if records is None:
                    records = cache.layers
                else:
                    for old, new in zip(records, cache.layers):
                        old.k_absmax = np.maximum(old.k_absmax, new.k_absmax)
                        old.v_absmax = np.maximum(old.v_absmax, new.v_absmax)
    if records is None:
        raise ValueError("calibration data is empty: static KV-cache scales need calibration text")
    return [(r.k_absmax, r.v_absmax) for r in records]


def _attention_layers(model: nn.Layer) -> list[nn.Layer]:
    return [layer.self_attn for layer in model.model.layers]


def enable_int8_kv_cache(model: nn.Layer, mode: str = "static",
                         absmax: list[tuple[np.ndarray, np.ndarray]] | None = None) -> nn.Layer:
    """Make ``model`` cache keys/values in int8: sets ``model.kv_cache_layout`` to the
    registered layout ``int8_static`` or ``int8_dynamic`` (:class:`Int8KVCacheLayout`), which
    ``model.new_cache`` (``generate``), ``model.new_paged_cache`` (the serving engine) and
    ``model.kv_cache_dtype`` (the engine's pool budget) ask.

    ``static`` gives every attention layer a :class:`KVCacheScales` ``cache_scales``:
    ``absmax / 127`` from :func:`calibrate_kv_scales`, or ones (to be overwritten by a
    checkpoint's tensors) when ``absmax`` is None.
    """
    if mode not in KV_MODES:
        raise ValueError(f"unknown KV-cache quantization '{mode}'; valid: {', '.join(KV_MODES)}")
    if not hasattr(model, "kv_cache_layout"):
        raise TypeError(f"{type(model).__name__} has no kv_cache_layout (see paddlellm.interfaces."
                        "CausalLM); cannot install an int8 KV cache")
    if mode == "static":
        hkv = model.config.num_kv_heads
        attn_layers = _attention_layers(model)
        if absmax is not None and len(absmax) != len(attn_layers):
            raise ValueError(f"{len(absmax)} KV scale pairs for {len(attn_layers)} layers")
        for i, attn in enumerate(attn_layers):
            scales = KVCacheScales(hkv)
            if absmax is not None:
                k, v = absmax[i]
                scales.k_scale = int8_scale(paddle.to_tensor(np.asarray(k, np.float32)))
                scales.v_scale = int8_scale(paddle.to_tensor(np.asarray(v, np.float32)))
            attn.cache_scales = scales
    model.kv_cache_quant = mode
    model.kv_cache_layout = f"int8_{mode}"  # new_cache/new_paged_cache/kv_cache_dtype ask it
    return model


def setup_kv_cache_quant(model: nn.Layer, mode: str | None, calibration: Iterable[Any] | None) -> str | None:
    """Apply a quantizer's ``kv_cache_quant`` option: ``None``/``"none"`` does nothing,
    ``"static"`` calibrates per-head scales on ``calibration``, ``"dynamic"`` needs no data.
    Returns the mode recorded in ``quantization_config``."""
    if mode in (None, "none"):
        return None
    if mode == "static":
        if not calibration:
            raise ValueError("kv_cache_quant 'static' needs calibration data (`--calibration_data FILE`)")
        enable_int8_kv_cache(model, "static", calibrate_kv_scales(model, calibration))
    else:
        enable_int8_kv_cache(model, mode)
    return mode


# --- the serving engine's paged cache ------------------------------------------------------

def _paged_classes():
    """Int8 subclasses of the engine's paged cache (built on first use: the engine is core)."""
    from paddlellm.api import BlockManager, PagedKVCache, PagedLayer

    class Int8PagedLayer(PagedLayer):
        """One layer's view of the int8 pool: ``write`` quantizes, ``gather_kv`` dequantizes
        (CPU has no int8 ``scatter``/``index_select``: ``index_put_``/``gather`` instead)."""

        def __init__(self, batch, owner: "Int8PagedKVCache", i: int) -> None:
            super().__init__(batch, owner.key_pools[i], owner.value_pools[i])
            self.owner, self.index = owner, i

        def _scales(self, x: paddle.Tensor, pools, slots) -> paddle.Tensor:
            if self.owner.static_scales is not None:  # (Hkv,) per layer
                return pools[self.index].reshape([1, -1, 1])  # (1, Hkv, 1)
            s = int8_scale(x.abs().max(axis=-1, keepdim=True))  # (N, Hkv, 1) per token and head
            paddle.index_put_(pools[self.index], (slots,), s)
            return s

        def write(self, k, v) -> None:
            n, slots, o = k.shape[1], self.batch.slot_mapping, self.owner
            k = k.reshape([n, k.shape[2], k.shape[3]]).astype("float32")  # (N, Hkv, D)
            v = v.reshape([n, v.shape[2], v.shape[3]]).astype("float32")  # (N, Hkv, D)
            ks, vs = self._scales(k, o.key_scales, slots), self._scales(v, o.value_scales, slots)
            paddle.index_put_(self.key_pool, (slots,), quantize_int8(k, ks))
            paddle.index_put_(self.value_pool, (slots,), quantize_int8(v, vs))

        def gather_kv(self, index: paddle.Tensor) -> tuple[paddle.Tensor, paddle.Tensor]:
            """Dequantized ``(len(index), Hkv, D)`` keys and values of pool slots ``index``."""
            o, i = self.owner, self.index
            out = []
            for pool, scales in ((self.key_pool, o.key_scales[i]), (self.value_pool, o.value_scales[i])):
                x = paddle.gather(pool, index, axis=0).astype("float32")  # (M, Hkv, D)
                s = (scales.reshape([1, -1, 1]) if o.static_scales is not None
                     else paddle.gather(scales, index, axis=0))  # (1 or M, Hkv, 1)
                out.append((x * s).astype(o.dtype))
            return out[0], out[1]

    class Int8PagedKVCache(PagedKVCache):
        """The engine's paged pools in int8: static per-head scales, or dynamic per-slot
        ``(num_slots, Hkv, 1)`` float32 scales written with each token."""

        #: a slot's int8 keys/values and scale depend on its own token only, so the engine
        #: may reuse committed prefix blocks (prefix caching)
        supports_prefix_caching = True

        def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                     head_dim: int, dtype: str = "float32",
                     static_scales: list[tuple[paddle.Tensor, paddle.Tensor]] | None = None) -> None:
            self.num_layers, self.block_size, self.dtype = num_layers, block_size, dtype
            self.kv_heads, self.head_dim = kv_heads, head_dim
            self.blocks = BlockManager(num_blocks, block_size)
            slots = num_blocks * block_size
            self.key_pools = [paddle.zeros([slots, kv_heads, head_dim], dtype="int8") for _ in range(num_layers)]
            self.value_pools = [paddle.zeros([slots, kv_heads, head_dim], dtype="int8") for _ in range(num_layers)]
            self.static_scales = static_scales
            if static_scales is not None:
                self.key_scales = [k.astype("float32") for k, _ in static_scales]  # (Hkv,) each
                self.value_scales = [v.astype("float32") for _, v in static_scales]
            else:
                self.key_scales = [paddle.ones([slots, kv_heads, 1], dtype="float32") for _ in range(num_layers)]
                self.value_scales = [paddle.ones([slots, kv_heads, 1], dtype="float32") for _ in range(num_layers)]

        @property
        def nbytes(self) -> int:
            pools = 2 * self.num_layers * self.num_blocks * self.block_size * self.kv_heads * self.head_dim
            scales = sum(int(s.size) * 4 for s in (*self.key_scales, *self.value_scales))
            return pools + scales

        def batch(self, seq_ids, cached, new):
            view = super().batch(seq_ids, cached, new)
            view._layers = [Int8PagedLayer(view, self, i) for i in range(self.num_layers)]
            return view

    return Int8PagedKVCache


# --- the registered layouts ----------------------------------------------------------------

class Int8KVCacheLayout:
    """The ``int8_static`` / ``int8_dynamic`` KV-cache layouts
    (:class:`paddlellm.interfaces.KVCacheLayout`): contiguous :class:`Int8KVCache` for
    ``generate`` and an int8 paged pool for the serving engine. Static scales are read from
    the model's attention layers (``self_attn.cache_scales``, set by
    :func:`enable_int8_kv_cache` or loaded from a checkpoint)."""

    def __init__(self, mode: str) -> None:
        self.mode, self.name = mode, f"int8_{mode}"

    def __repr__(self) -> str:
        return f"<kv cache layout {self.name}>"

    def storage_dtype(self, model: Any) -> str:
        return "int8"

    def _static_scales(self, model: Any) -> list[tuple[paddle.Tensor, paddle.Tensor]] | None:
        if self.mode != "static":
            return None
        layers = _attention_layers(model)
        if not all(hasattr(a, "cache_scales") for a in layers):
            raise ValueError(f"kv_cache_layout '{self.name}' needs per-layer static scales "
                             "(self_attn.cache_scales): use enable_int8_kv_cache(model, 'static', ...)")
        return [(a.cache_scales.k_scale, a.cache_scales.v_scale) for a in layers]

    def new_cache(self, model: Any, batch: int, max_length: int, dtype: str) -> Int8KVCache:
        c = model.config
        return Int8KVCache(c.num_layers, batch, max_length, c.num_kv_heads, c.head_dim, dtype,
                           self._static_scales(model))

    def new_paged_cache(self, model: Any, num_layers: int, num_blocks: int, block_size: int,
                        kv_heads: int, head_dim: int, dtype: str):
        return _paged_classes()(num_layers, num_blocks, block_size, kv_heads, head_dim, dtype,
                                self._static_scales(model))


INT8_STATIC = Int8KVCacheLayout("static")
INT8_DYNAMIC = Int8KVCacheLayout("dynamic")
