"""The one configurable decoder behind every family (driven by :class:`ModelConfig`).

Parameter names follow the LLaMA layout of ``transformers`` (``model.layers.{i}.self_attn.q_proj``,
...); family modules map their checkpoints onto them. Linear weights are Paddle's
``(in, out)``; attention runs through the kernel chosen by ``paddlellm.modeling.attention``.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from paddlellm.api import get_attention_kernel
from paddlellm.interfaces import AttentionSpec
from paddlellm.api import DEFAULT_KV_CACHE_LAYOUT, KVCache, get_kv_cache_layout

from . import rope
from .config import ModelConfig

_INIT = {"on": True, "std": 0.02}


@contextmanager
def build_context(dtype: str = "float32", init: bool = True, std: float = 0.02) -> Iterator[None]:
    """Create parameters in ``dtype``; ``init=False`` skips random init (weights come from disk)."""
    old_dtype, old_init = paddle.get_default_dtype(), dict(_INIT)
    paddle.set_default_dtype(dtype)
    _INIT.update(on=init, std=std)
    try:
        yield
    finally:
        paddle.set_default_dtype(old_dtype)
        _INIT.update(old_init)


def _weight_attr(std_scale: float = 1.0) -> paddle.ParamAttr:
    init = (nn.initializer.Normal(0.0, _INIT["std"] * std_scale) if _INIT["on"]
            else nn.initializer.Constant(0.0))
    return paddle.ParamAttr(initializer=init)


def _const_attr(value: float) -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Constant(value if _INIT["on"] else 0.0))


def _float_kernel(holder: Any, x: paddle.Tensor, n_in: int, n_out: int, transposed: bool):
    """The compiled float32 product the core's linear-kernel seam offers for this layer and
    ``x``'s device (``paddlellm.api.get_linear_kernel`` with ``LinearSpec(bits=32)``), cached
    on ``holder``; None where none serves or a gradient must flow through the product."""
    if paddle.is_grad_enabled() and not x.stop_gradient:
        return None
    place = x.place
    cached = holder.__dict__.get("_float_kernel_cache")
    if cached is None or cached[0] != place:
        from paddlellm.api import get_linear_kernel
        from paddlellm.interfaces import LinearSpec

        spec = LinearSpec(bits=32, dtype="float32", in_features=n_in, out_features=n_out,
                          transposed=transposed)
        try:
            kernel = get_linear_kernel(spec)
        except Exception:  # no plugin manager / backend: Paddle's matmul
            kernel = None
        cached = (place, kernel)
        holder.__dict__["_float_kernel_cache"] = cached
    return cached[1]


class Linear(nn.Linear):
    """``nn.Linear`` whose products at inference (no gradient through them) run on a compiled
    float32 kernel when an installed kernel plugin offers one for a call (``paddlellm-kernels-
    cpu``: decode's few rows); everything else -- training, prefill, other dtypes and devices
    -- is ``F.linear``. Parameters, names and checkpoints are ``nn.Linear``'s."""

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        kernel = _float_kernel(self, x, self.weight.shape[0], self.weight.shape[1], False)
        if kernel is not None and (self.weight.stop_gradient or not paddle.is_grad_enabled()):
            y = kernel(x, self.weight, self.bias, bits=32, group_size=-1, transposed=False)
            if y is not None:
                return y
        return F.linear(x, self.weight, self.bias)


def linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    return Linear(n_in, n_out, weight_attr=_weight_attr(),
                  bias_attr=_const_attr(0.0) if bias else False)


def embedding(num: int, dim: int) -> nn.Embedding:
    return nn.Embedding(num, dim, weight_attr=_weight_attr())


def _activation(name: str):
    if name == "silu":
        return F.silu
    if name == "gelu":
        return F.gelu
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate=True)
    if name == "relu":
        return F.relu
    raise ValueError(f"unknown activation '{name}'")


class Norm(nn.Layer):
    """RMSNorm (computed in float32, optional ``(1 + w)``) or LayerNorm."""

    def __init__(self, dim: int, config: ModelConfig) -> None:
        super().__init__()
        self.kind, self.eps, self.unit_offset = config.norm, config.norm_eps, config.norm_unit_offset
        self.weight = self.create_parameter([dim], attr=_const_attr(0.0 if self.unit_offset else 1.0))
        self.bias = (self.create_parameter([dim], attr=_const_attr(0.0), is_bias=True)
                     if self.kind == "layer" else None)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.kind == "layer":
            return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)
        dtype = x.dtype
        low = dtype != paddle.float32
        xf = x.astype("float32") if low else x
        xf = xf * paddle.rsqrt((xf * xf).mean(axis=-1, keepdim=True) + self.eps)
        if self.unit_offset:  # Gemma: (1 + w) in float32, then cast
            out = xf * (1.0 + (self.weight.astype("float32") if low else self.weight))
            return out.astype(dtype) if low else out
        return self.weight * (xf.astype(dtype) if low else xf)


class Rotary:
    """cos/sin tables for the positions of one forward call (shared by all layers)."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.dim = config.rotary_dim or config.head_dim
        self.kind = rope.rope_type(config.rope_scaling)
        self._static = None
        self._longrope: dict[bool, tuple[paddle.Tensor, float]] = {}

    def _tensor(self, freq: np.ndarray) -> paddle.Tensor:
        if self.config.rope_inv_freq_fp16:  # ChatGLM-6B keeps its inverse frequencies in float16
            freq = np.asarray(freq).astype(np.float16).astype(np.float32)
        return paddle.to_tensor(freq)

    def _freq(self, max_pos: int | None) -> tuple[paddle.Tensor, float]:
        c = self.config
        if self.kind == "longrope":  # short or long factors, by the longest position
            long = max_pos + 1 > c.rope_scaling["original_max_position_embeddings"]
            if long not in self._longrope:
                freq, factor = rope.inv_freq(self.dim, c.rope_theta, c.rope_scaling,
                                             c.max_position_embeddings, seq_len=max_pos + 1)
                self._longrope[long] = (self._tensor(freq), factor)
            return self._longrope[long]
        if self.kind == "dynamic" and max_pos is not None and max_pos + 1 > c.max_position_embeddings:
            freq, factor = rope.inv_freq(self.dim, c.rope_theta, c.rope_scaling,
                                         c.max_position_embeddings, seq_len=max_pos + 1)
            return self._tensor(freq), factor
        if self._static is None:
            freq, factor = rope.inv_freq(self.dim, c.rope_theta, c.rope_scaling,
                                         c.max_position_embeddings)
            self._static = (self._tensor(freq), factor)
        return self._static

    def __call__(self, position_ids: paddle.Tensor, dtype) -> tuple[paddle.Tensor, paddle.Tensor]:
        """``(cos, signed_sin)``, each ``(B, T, 1, D)``; see :func:`apply_rotary`. GLM's 2D
        position ids ``(B, 2, T)`` give ``(B, T, 1, 2, D)``: one table per half of the head."""
        if position_ids.ndim == 3:  # (B, 2, T): positions and block positions
            parts = [self(position_ids[:, k], dtype) for k in range(position_ids.shape[1])]
            return (paddle.stack([p[0] for p in parts], axis=-2),  # (B, T, 1, 2, D)
                    paddle.stack([p[1] for p in parts], axis=-2))
        max_pos = int(position_ids.max()) if self.kind in rope.LENGTH_DEPENDENT else None
        inv_freq, scale = self._freq(max_pos)
        freqs = position_ids.astype("float32").unsqueeze(-1) * inv_freq  # (B, T, D/2)
        cos, sin = paddle.cos(freqs), paddle.sin(freqs)
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        if self.config.rotary_interleaved:  # pairs (x0, x1), (x2, x3)...: [c0, c0, c1, c1, ...]
            b, t, half = cos.shape
            cos = paddle.stack([cos, cos], axis=-1).reshape([b, t, 1, 2 * half])  # (B, T, 1, D)
            sin = paddle.stack([-sin, sin], axis=-1).reshape([b, t, 1, 2 * half])  # [-s0, s0, ...]
            return cos.astype(dtype), sin.astype(dtype)
        cos = paddle.concat([cos, cos], axis=-1).unsqueeze(2)  # (B, T, 1, D)
        sin = paddle.concat([-sin, sin], axis=-1).unsqueeze(2)  # (B, T, 1, D), sign of rotate_half
        return cos.astype(dtype), sin.astype(dtype)


#: from this many rows (B * T) the rotary tables are tiled over the heads once per forward:
#: Paddle's CPU multiply broadcasting a (B, T, 1, D) table over the heads ran ~6x slower than
#: the same-shape one (prefill of 2264 tokens: 13.5 ms per apply_rotary vs ~5 ms with tiles)
ROPE_TILE_ROWS = 64


def _rope_for_heads(ctx: dict[str, Any], heads: int) -> tuple[paddle.Tensor, paddle.Tensor]:
    """``ctx["rope"]``'s ``(cos, sin)``, tiled to ``heads`` heads for long calls (shared by every
    layer of the forward through ``ctx["rope_tiled"]``), else as they are."""
    cos, sin = ctx["rope"]
    if cos.ndim != 4 or cos.shape[2] != 1 or heads == 1 or cos.shape[0] * cos.shape[1] < ROPE_TILE_ROWS:
        return cos, sin
    tiled = ctx["rope_tiled"]
    if heads not in tiled:
        tiled[heads] = (paddle.tile(cos, [1, 1, heads, 1]), paddle.tile(sin, [1, 1, heads, 1]))
    return tiled[heads]


def apply_rotary(x: paddle.Tensor, cos: paddle.Tensor, signed_sin: paddle.Tensor,
                 interleaved: bool = False) -> paddle.Tensor:
    """``x * cos + rotate_half(x) * sin`` with rotate_half(x) = [-x2, x1] = roll(x) * [-1, 1];
    interleaved (pairs ``(x0, x1)``): the partner of each element is its pair's other half,
    ``[x1, x0, x3, x2, ...] * [-s0, s0, ...]``. With partial rotary (``cos`` narrower than
    ``x``) the remaining dims pass through."""
    if cos.ndim == x.ndim + 1:  # GLM 2D: x's last dim in blocks, each with its own table
        shape, blocks = x.shape, cos.shape[-2]
        xb = x.reshape([*shape[:-1], blocks, shape[-1] // blocks])  # (B, T, H, 2, D/2)
        return apply_rotary(xb, cos, signed_sin, interleaved).reshape(shape)
    rot = cos.shape[-1]
    if rot < x.shape[-1]:
        x_rot, x_pass = x[..., :rot], x[..., rot:]
        return paddle.concat([apply_rotary(x_rot, cos, signed_sin, interleaved), x_pass], axis=-1)
    if interleaved:
        shape = x.shape
        pairs = paddle.flip(x.reshape([*shape[:-1], rot // 2, 2]), axis=[-1])  # (B, T, H, D/2, 2)
        return x * cos + pairs.reshape(shape) * signed_sin  # (B, T, H, D)
    return x * cos + paddle.roll(x, shifts=rot // 2, axis=-1) * signed_sin  # (B, T, H, D)


def glm_positions(token_ids, bos_token_id: int, mask_token_ids) -> np.ndarray:
    """GLM's 2D position ids ``(2, L)`` of one unpadded sequence (THUDM's ``get_position_ids``):
    with ``c`` the index of the first ``bos_token_id`` (the context length) and ``m`` the index
    of the first mask token present (in ``mask_token_ids``' order), token ``t`` has position
    ``t`` and block position 0 before ``c``, position ``m`` and block position ``t - c + 1``
    from ``c`` on (generated tokens included). A sequence without bos is all context."""
    ids = np.asarray(token_ids, dtype=np.int64)
    n = len(ids)
    hits = np.flatnonzero(ids == bos_token_id)
    c = int(hits[0]) if len(hits) else n
    m = c
    for mask_id in mask_token_ids:
        found = np.flatnonzero(ids == mask_id)
        if len(found):
            m = int(found[0])
            break
    t = np.arange(n, dtype=np.int64)
    return np.stack([np.where(t < c, t, m), np.where(t < c, 0, t - c + 1)])  # (2, L)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """Bloom's ALiBi slopes ``(H,)``."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = np.float32(2 ** (-(2 ** -(math.log2(closest) - 3))))
    slopes = base ** np.arange(1, 1 + closest, dtype=np.float32)
    if closest != num_heads:
        extra_base = np.float32(2 ** (-(2 ** -(math.log2(2 * closest) - 3))))
        remaining = min(closest, num_heads - closest)
        extra = extra_base ** np.arange(1, 1 + 2 * remaining, 2, dtype=np.float32)
        slopes = np.concatenate([slopes, extra])
    return slopes.astype(np.float32)


class Attention(nn.Layer):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, d
        self.scale = config.attention_scale
        self.fused, self.interleaved = config.fused_qkv, config.rotary_interleaved
        if self.fused:
            self.qkv_proj = linear(h, (config.num_heads + 2 * config.num_kv_heads) * d, config.qkv_bias)
        else:
            self.q_proj = linear(h, config.num_heads * d, config.qkv_bias)
            self.k_proj = linear(h, config.num_kv_heads * d, config.qkv_bias)
            self.v_proj = linear(h, config.num_kv_heads * d, config.qkv_bias)
        self.o_proj = linear(config.num_heads * d, h, config.out_bias)
        if config.qk_norm:
            self.q_norm, self.k_norm = Norm(d, config), Norm(d, config)
        self.qk_norm = config.qk_norm

    def forward(self, x: paddle.Tensor, ctx: dict[str, Any], cache=None) -> paddle.Tensor:
        b, t = x.shape[0], x.shape[1]
        q, k, v = self._qkv(x, ctx, cache)  # (B, T, Hq, D), (B, T, Hkv, D), (B, T, Hkv, D)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        if ctx["rope"] is not None:
            cq, sq = _rope_for_heads(ctx, q.shape[2])
            ck, sk = _rope_for_heads(ctx, k.shape[2])
            q, k = apply_rotary(q, cq, sq, self.interleaved), apply_rotary(k, ck, sk, self.interleaved)
        if ctx.get("prefix") is not None:  # prefix tuning: (B, P, Hkv, D) keys/values first
            prefix_k, prefix_v = ctx["prefix"]
            k = paddle.concat([prefix_k.astype(k.dtype), k], axis=1)  # (B, P + T, Hkv, D)
            v = paddle.concat([prefix_v.astype(v.dtype), v], axis=1)  # (B, P + T, Hkv, D)
        out = ctx["kernel"](q, k, v, causal=True, attention_mask=ctx["mask"],
                            sliding_window=ctx["window"], alibi_slopes=ctx["alibi"],
                            segment_ids=ctx["segments"], scale=self.scale,
                            softcap=ctx["softcap"], cache=cache,
                            **ctx["extra"])  # (B, T, Hq, D)
        return self.o_proj(out.reshape([b, t, self.num_heads * self.head_dim]))

    def _qkv(self, x: paddle.Tensor, ctx: dict[str, Any] | None = None,
             cache=None) -> tuple[paddle.Tensor, paddle.Tensor, paddle.Tensor]:
        """Queries, keys and values of ``x`` (a family's own attention block overrides this
        and may read the call's ``ctx`` and the layer's ``cache``)."""
        b, t, hq, hkv, d = x.shape[0], x.shape[1], self.num_heads, self.num_kv_heads, self.head_dim
        if self.fused == "heads":  # Bloom: rows (H, 3, D)
            qkv = self.qkv_proj(x).reshape([b, t, hq, 3, d])  # (B, T, H, 3, D)
            return qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
        if self.fused == "concat":  # rows [q; k; v]
            q, k, v = paddle.split(self.qkv_proj(x), [hq * d, hkv * d, hkv * d], axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        return q.reshape([b, t, hq, d]), k.reshape([b, t, hkv, d]), v.reshape([b, t, hkv, d])


class MLP(nn.Layer):
    """``down(act(gate(x)) * up(x))`` (gated) or ``down(act(up(x)))``."""

    def __init__(self, config: ModelConfig, intermediate: int) -> None:
        super().__init__()
        h, bias = config.hidden_size, config.mlp_bias
        self.gated = config.gated_mlp
        self.fused = self.gated and config.fused_gate_up
        self.act = _activation(config.activation)
        if self.fused:
            self.gate_up_proj = linear(h, 2 * intermediate, bias)  # rows [gate; up]
        else:
            if self.gated:
                self.gate_proj = linear(h, intermediate, bias)
            self.up_proj = linear(h, intermediate, bias)
        self.down_proj = linear(intermediate, h, bias)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        if self.fused:
            gate, up = paddle.chunk(self.gate_up_proj(x), 2, axis=-1)  # (..., I) each
            return self.down_proj(self.act(gate) * up)
        if self.gated:
            return self.down_proj(self.act(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(self.act(self.up_proj(x)))


class SparseMoE(nn.Layer):
    """Top-k routed experts (softmax in float32), plus an optional gated shared expert."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk = config.num_experts_per_tok, config.norm_topk_prob
        self.gate = linear(config.hidden_size, config.num_experts, False)  # the router
        inter = config.moe_intermediate_size or config.intermediate_size
        self.experts = nn.LayerList([MLP(config, inter) for _ in range(config.num_experts)])
        self.shared_expert = (MLP(config, config.shared_expert_intermediate_size)
                              if config.shared_expert_intermediate_size else None)
        self.shared_expert_gate = (linear(config.hidden_size, 1, False)
                                   if self.shared_expert is not None and config.shared_expert_gate
                                   else None)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        shape = x.shape
        xs = x.reshape([-1, shape[-1]])  # (N, H)
        probs = F.softmax(self.gate(xs).astype("float32"), axis=-1)  # (N, E)
        weights, chosen = paddle.topk(probs, self.top_k, axis=-1)  # (N, k)
        if self.norm_topk:
            weights = weights / weights.sum(axis=-1, keepdim=True)
        weights = weights.astype(x.dtype).flatten()  # (N*k,)
        chosen = chosen.flatten()  # (N*k,)
        out = paddle.zeros_like(xs)
        hit = np.unique(chosen.numpy())
        for e in hit.tolist():
            slots = paddle.nonzero(chosen == e).flatten()  # (n_e,)
            tokens = slots // self.top_k
            y = self.experts[e](paddle.gather(xs, tokens)) * paddle.gather(weights, slots).unsqueeze(-1)
            out = paddle.index_add(out, tokens, 0, y)
        if self.shared_expert is not None:
            shared = self.shared_expert(xs)
            if self.shared_expert_gate is not None:
                shared = F.sigmoid(self.shared_expert_gate(xs)) * shared
            out = out + shared
        return out.reshape(shape)


class DecoderLayer(nn.Layer):
    def __init__(self, config: ModelConfig, index: int) -> None:
        super().__init__()
        self.pre_norm, self.parallel = config.pre_norm, config.parallel_residual
        self.residual_scale = config.residual_post_norm_scale
        self.input_layernorm = Norm(config.hidden_size, config)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = Norm(config.hidden_size, config)
        self.mlp = SparseMoE(config) if config.is_moe_layer(index) else MLP(config, config.intermediate_size)
        self.sandwich = config.sandwich_norm
        if self.sandwich:
            self.attn_output_norm = Norm(config.hidden_size, config)
            self.mlp_output_norm = Norm(config.hidden_size, config)

    def forward(self, x: paddle.Tensor, ctx: dict[str, Any], cache=None) -> paddle.Tensor:
        if self.sandwich:  # Gemma 2
            x = x + self.attn_output_norm(self.self_attn(self.input_layernorm(x), ctx, cache))
            return x + self.mlp_output_norm(self.mlp(self.post_attention_layernorm(x)))
        if self.parallel:
            return (x + self.self_attn(self.input_layernorm(x), ctx, cache)
                    + self.mlp(self.post_attention_layernorm(x)))
        if self.residual_scale is not None:  # GLM: the residual is the normalised input, scaled
            h = self.input_layernorm(x)
            x = h * self.residual_scale + self.self_attn(h, ctx, cache)
            h = self.post_attention_layernorm(x)
            return h * self.residual_scale + self.mlp(h)
        if not self.pre_norm:  # post-LN (OPT-350m)
            x = self.input_layernorm(x + self.self_attn(x, ctx, cache))
            return self.post_attention_layernorm(x + self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), ctx, cache)
        return x + self.mlp(self.post_attention_layernorm(x))

    def fused_decode(self, kernel, x: paddle.Tensor, ctx: dict[str, Any], cache):
        """This layer in one call of a fused decoder-layer ``kernel`` (see
        ``CausalLM._fused_decode``), or None where its modules are not the plain ones (a LoRA
        or quantized projection, a family's own attention block, experts) or the kernel
        declines the call: the caller then runs :meth:`forward`."""
        plan = self._fused_plan()
        if plan is None:
            return None
        weights, biases, scales, bits, group_size, eps, num_heads, scale = plan
        cos, sin = ctx["rope_rows"]
        return kernel(x, weights, biases, cos, sin, cache=cache, eps=eps, num_heads=num_heads,
                      scale=scale, softcap=ctx["softcap"], scales=scales, bits=bits,
                      group_size=group_size, sliding_window=ctx["window"])

    def _fused_plan(self) -> tuple | None:
        """The tensors and settings :meth:`fused_decode` passes (None: not a plain layer),
        gathered once per set of modules, parameters and buffers: a swapped module (an adapter,
        a quantized projection) or a reassigned tensor gives a new key and a new plan."""
        key = _layer_key(self)
        cached = self.__dict__.get("_fused_plan_cache")
        if cached is not None and cached[0] == key:
            return cached[2]
        plan = self._gather_fused_plan()
        # the modules are kept with the key so that their ids are not reused while it lives
        self.__dict__["_fused_plan_cache"] = (key, list(self.sublayers(include_self=True)), plan)
        return plan

    def _gather_fused_plan(self) -> tuple | None:
        a, m = self.self_attn, self.mlp
        if (type(self) is not DecoderLayer or type(a) is not Attention or type(m) is not MLP
                or self.sandwich or self.parallel or self.residual_scale is not None):
            return None
        projections = (a.q_proj, a.k_proj, a.v_proj, a.o_proj, m.gate_proj, m.up_proj, m.down_proj)
        formats = {_projection_format(p) for p in projections}
        formats.discard("float")
        if None in formats or len(formats) > 1:  # adapters, other layers, mixed quantizations
            return None
        bits, group_size = formats.pop() if formats else (32, -1)
        n1, n2 = self.input_layernorm, self.post_attention_layernorm
        if n1.weight.dtype != paddle.float32 or n2.weight.dtype != paddle.float32:
            return None
        stored = [p.weight if type(p) is Linear else p.qweight for p in projections]
        weights = (n1.weight, *stored[:4], n2.weight, *stored[4:])
        scales = tuple(None if type(p) is Linear else p.scales for p in projections)
        biases = (a.q_proj.bias, a.k_proj.bias, a.v_proj.bias, a.o_proj.bias)
        return weights, biases, scales, bits, group_size, n1.eps, a.num_heads, a.scale


def _layer_key(layer: nn.Layer) -> tuple:
    """The identities of ``layer``, its sublayers and all their parameters and buffers (read
    from the layers' own dicts: cheaper than attribute access on ``nn.Layer``)."""
    out, stack = [], [layer]
    while stack:
        node = stack.pop()
        out.append(id(node))
        out.extend(map(id, node._parameters.values()))
        out.extend(map(id, node._buffers.values()))
        stack.extend(node._sub_layers.values())
    return tuple(out)


def _projection_format(p) -> str | tuple[int, int] | None:
    """``"float"`` for this plugin's own float32 linear layer, ``(bits, group_size)`` for a weight-only
    quantized one in the storage ``WeightOnlyLinearKernel`` describes (``qweight``, float32
    ``scales``, no input pre-scaling), None for anything else (LoRA wrappers, other layers)."""
    if type(p) is Linear:
        return "float" if p.weight.dtype == paddle.float32 else None
    if (getattr(p, "bits", None) in (8, 4) and hasattr(p, "qweight") and hasattr(p, "scales")
            and getattr(p, "pre_scale", 0) is None and p.scales.dtype == paddle.float32):
        return (int(p.bits), int(p.group_size))
    return None


def _fusable_config(c: ModelConfig) -> bool:
    """Whether every layer of ``c`` is the plain pre-norm Llama layer a fused decoder-layer
    kernel computes: RMSNorm (no offset), separate q/k/v (biases allowed) and o projections,
    full rotate-half rotary, SiLU-gated MLP without biases, no extra norms or scales."""
    return (c.pre_norm and not c.parallel_residual and not c.sandwich_norm
            and c.residual_post_norm_scale is None and c.norm == "rms" and not c.norm_unit_offset
            and not c.qk_norm and c.position == "rope" and not c.rotary_interleaved
            and not c.position_encoding_2d and c.rotary_dim in (None, c.head_dim)
            and not c.fused_qkv and c.gated_mlp and not c.fused_gate_up
            and c.activation == "silu" and not c.mlp_bias and not c.prefix_lm)


class DecoderModel(nn.Layer):
    """Embeddings, the stack of decoder layers and the final norm."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        emb_dim = c.embed_proj_dim or c.hidden_size
        self.embed_tokens = embedding(c.vocab_size, emb_dim)
        if c.position == "learned":
            self.embed_positions = embedding(c.max_position_embeddings + c.learned_position_offset,
                                             c.hidden_size)
        if c.embed_proj_dim and c.embed_proj_dim != c.hidden_size:
            self.project_in = linear(emb_dim, c.hidden_size, False)
            self.project_out = linear(c.hidden_size, emb_dim, False)
        if c.embedding_norm:
            self.embed_norm = Norm(c.hidden_size, c)
        self.layers = nn.LayerList([DecoderLayer(c, i) for i in range(c.num_layers)])
        if c.final_norm:
            self.norm = Norm(c.hidden_size, c)


class CausalLM(nn.Layer):
    """A decoder-only language model: ``model(input_ids, attention_mask) -> logits (B, T, V)``.

    Follows :class:`paddlellm.interfaces.CausalLM`, the contract the core and plugins rely on.
    """

    def __init__(self, config: ModelConfig, family: Any = None) -> None:
        super().__init__()
        self.config, self.family = config, family
        #: defaults from ``generation_config.json`` (eos/pad/bos ids) when loaded from disk
        self.generation_config: dict[str, Any] = {}
        #: recompute each layer's activations in backward (``enable_recompute``)
        self.recompute = False
        self.model = DecoderModel(config)
        if not config.tie_embeddings:
            self.lm_head = linear(config.embed_proj_dim or config.hidden_size, config.vocab_size, False)
        self._rotary = Rotary(config) if config.position == "rope" else None
        if config.position == "alibi":  # a buffer, so it follows the model across devices
            self.register_buffer("alibi_slopes", paddle.to_tensor(alibi_slopes(config.num_heads)),
                                 persistable=False)
        else:
            self.alibi_slopes = None
        #: prefix tuning: a callable ``batch -> [(k, v)] * num_layers`` of ``(B, P, Hkv, D)``
        #: prefix keys/values (or None), set by a PEFT method; see :meth:`_apply_prefix`
        self.prefix_kv = None
        #: the registered KV-cache layout caches are built in (``paddlellm.modeling.kv_layout``;
        #: a quantizer sets ``"int8_static"``/``"int8_dynamic"``)
        self.kv_cache_layout = DEFAULT_KV_CACHE_LAYOUT

    # -- forward ---------------------------------------------------------------------------
    def sequence_positions(self, token_ids, start: int, end: int) -> np.ndarray:
        """Position ids of tokens ``start..end-1`` of one unpadded sequence whose tokens so far
        are ``token_ids`` (prompt and generated; at least ``end`` of them): ``(T,)`` int64,
        or ``(2, T)`` with GLM's 2D positions. Callers that feed a sequence piece by piece
        (the serving engine, ``generate``) ask here instead of assuming ``arange``."""
        if not self.config.position_encoding_2d:
            return np.arange(start, end, dtype=np.int64)
        return glm_positions(token_ids, self.config.bos_token_id,
                             self.config.mask_token_ids)[:, start:end]

    @property
    def positions_from_tokens(self) -> bool:
        """Whether position ids depend on the tokens (GLM's 2D ones): a caller that feeds a
        sequence after a cache must pass ``position_ids`` from :meth:`sequence_positions`."""
        return bool(self.config.position_encoding_2d)

    def _glm_rows(self, input_ids: paddle.Tensor, attention_mask, segment_ids):
        """``[(row, columns, tokens)]``: each sequence of a call that starts its sequences --
        a row's real tokens (padding on either side dropped), or each segment of a packed row."""
        ids = input_ids.numpy()
        t = ids.shape[1]
        out = []
        if segment_ids is not None:
            seg = segment_ids.numpy()
            for row in range(ids.shape[0]):
                for value in np.unique(seg[row]):
                    if value < 0:  # padding
                        continue
                    cols = np.flatnonzero(seg[row] == value)
                    out.append((row, cols, ids[row, cols]))
            return out
        keep = (np.ones(ids.shape, bool) if attention_mask is None
                else attention_mask.numpy()[:, -t:].astype(bool))
        for row in range(ids.shape[0]):
            cols = np.flatnonzero(keep[row])
            out.append((row, cols, ids[row, cols]))
        return out

    def _glm_positions(self, input_ids, attention_mask, segment_ids, past: int) -> paddle.Tensor:
        """GLM's 2D position ids ``(B, 2, T)`` of a call that gave none (or, packed, gave the
        restarting 1D ones): each sequence's own, zeros on padding."""
        if past:
            raise ValueError("GLM 2D positions depend on the whole sequence: pass position_ids "
                             "(model.sequence_positions) when feeding tokens after a cache")
        b, t = input_ids.shape
        out = np.zeros((b, 2, t), dtype=np.int64)
        c = self.config
        for row, cols, tokens in self._glm_rows(input_ids, attention_mask, segment_ids):
            out[row][:, cols] = glm_positions(tokens, c.bos_token_id, c.mask_token_ids)
        return paddle.to_tensor(out)

    def _context(self, input_ids, attention_mask, segment_ids, cache, offset: int):
        """The prefix-LM context (GLM) as the attention kernels take it, or None (plain causal):
        ``{"prefix_lens": [...]}`` for a paged call (per sequence that starts in this call: the
        index of its first bos; 0 for one that continues -- a continuing query sees its whole
        cached context causally), ``{"context_keys": (B, offset + T) bool}`` for a dense call
        that starts its rows (keys before each sequence's first bos; ``offset`` leading keys
        of prefix tuning), None for a dense call after a cache."""
        if not self.config.prefix_lm:
            return None
        bos = self.config.bos_token_id

        def context(tokens) -> int:
            hits = np.flatnonzero(np.asarray(tokens) == bos)
            return int(hits[0]) if len(hits) else 0

        if getattr(cache, "paged", False):
            row, lens = input_ids.numpy()[0], []
            for start, n, total in zip(cache.query_start, cache.query_lens, cache.context_lens_host):
                lens.append(context(row[start:start + n]) if total == n else 0)
            return {"prefix_lens": lens} if any(lens) else None
        if cache is not None and cache.seq_length > 0:
            return None
        b, t = input_ids.shape
        keys = np.zeros((b, offset + t), dtype=bool)
        for row, cols, tokens in self._glm_rows(input_ids, attention_mask, segment_ids):
            keys[row, offset + cols[:context(tokens)]] = True
        return {"context_keys": paddle.to_tensor(keys)} if keys.any() else None

    def positions(self, batch: int, length: int, attention_mask: paddle.Tensor | None,
                  past: int) -> paddle.Tensor:
        """``(B, T)`` position ids: ``cumsum(mask) - 1`` with padding, else ``past + arange``."""
        if attention_mask is None:
            pos = paddle.arange(past, past + length, dtype="int64").unsqueeze(0)
            return pos.expand([batch, length])
        pos = paddle.cumsum(attention_mask.astype("int64"), axis=-1) - 1  # (B, Tk)
        return paddle.clip(pos[:, -length:], min=0)

    def forward_hidden(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None,
                       position_ids: paddle.Tensor | None = None, cache: KVCache | None = None,
                       segment_ids: paddle.Tensor | None = None) -> paddle.Tensor:
        """Final hidden states ``(B, T, H)`` (after the final norm, before ``project_out``).

        ``segment_ids (B, T)`` packs several sequences into one row (zero padding): tokens
        attend only within their segment; pass ``position_ids`` restarting per segment.
        """
        c, m = self.config, self.model
        if segment_ids is not None and cache is not None:
            raise ValueError("segment_ids (packed sequences) cannot be used with a KV cache")
        b, t = input_ids.shape
        # before the prefix tuning's keys go into the cache: whether this call starts the rows
        glm_context = self._context(input_ids, attention_mask, segment_ids, cache,
                                    getattr(self.prefix_kv, "num_tokens", 0)
                                    if self.prefix_kv is not None else 0)
        if c.position_encoding_2d and (position_ids is None or
                                       (segment_ids is not None and position_ids.ndim == 2)):
            # GLM: the 2D positions of each sequence (packed rows: each segment's own)
            position_ids = self._glm_positions(input_ids, attention_mask, segment_ids,
                                               cache.seq_length if cache is not None else 0)
        prefix, attention_mask, position_ids = self._apply_prefix(b, attention_mask, position_ids,
                                                                  cache, segment_ids)
        past = cache.seq_length if cache is not None else (prefix[0][0].shape[1] if prefix else 0)
        if position_ids is None and c.position in ("rope", "learned"):
            position_ids = self.positions(b, t, attention_mask, past)
        x = m.embed_tokens(input_ids)  # (B, T, E)
        if c.embedding_multiplier != 1.0:
            x = x * paddle.to_tensor(c.embedding_multiplier, dtype=x.dtype)
        if hasattr(m, "project_in"):
            x = m.project_in(x)  # (B, T, H)
        if c.position == "learned":
            pos = paddle.clip(position_ids, min=0) + c.learned_position_offset
            x = x + m.embed_positions(pos)
        if c.embedding_norm:
            x = m.embed_norm(x)
        ctx = {
            "rope": self._rotary(position_ids, x.dtype) if self._rotary is not None else None,
            "rope_tiled": {},  # the rope tables tiled per head count (_rope_for_heads)
            "mask": attention_mask,
            "segments": segment_ids,
            "window": c.sliding_window,
            "alibi": self.alibi_slopes,
            "softcap": c.attention_softcap,
            # only non-default extras, so kernels written before them keep working
            "extra": glm_context or {},
            "kernel": get_attention_kernel(AttentionSpec(
                dtype=str(x.dtype).replace("paddle.", ""), head_dim=c.head_dim, causal=True,
                padding_mask=attention_mask is not None, sliding_window=c.sliding_window is not None,
                alibi=self.alibi_slopes is not None, softcap=c.attention_softcap is not None,
                segments=segment_ids is not None, prefix=glm_context is not None,
                cache=("none" if cache is None else
                       "paged" if getattr(cache, "paged", False) else "contiguous"),
                training=paddle.is_grad_enabled())),
        }
        full = c.full_attention_layers
        fused = self._fused_decode(ctx, x, cache, prefix)
        for i, layer in enumerate(m.layers):
            layer_ctx = {**ctx, "window": None if i in full else c.sliding_window} if full else ctx
            if prefix:
                layer_ctx = {**layer_ctx, "prefix": prefix[i]}
            if fused is not None:
                y = layer.fused_decode(fused, x, layer_ctx, cache[i])
                if y is not None:
                    x = y
                    continue
            if self.recompute and self.training and cache is None and paddle.is_grad_enabled():
                from paddle.distributed.fleet.utils import recompute

                x = recompute(layer, x, layer_ctx, None, use_reentrant=False)
            else:
                x = layer(x, layer_ctx, cache[i] if cache is not None else None)
        if c.final_norm:
            x = m.norm(x)
        return x

    def _fused_decode(self, ctx: dict[str, Any], x: paddle.Tensor, cache, prefix):
        """The attention kernel's whole-layer entry point (``decoder_layer``, optional in the
        kernel contract) when this call can use it -- a paged inference call of a plain
        Llama-shaped model (the kernel declines calls with more rows than it takes) -- else None. Adds the rows' rotary tables ``(N, D)`` to
        ``ctx``. Each layer still checks its own modules (``DecoderLayer.fused_decode``)."""
        fused = getattr(ctx["kernel"], "decoder_layer", None)
        if (fused is None or prefix or ctx["rope"] is None or ctx["mask"] is not None
                or ctx["segments"] is not None or ctx["alibi"] is not None or ctx["extra"]
                or not getattr(cache, "paged", False) or paddle.is_grad_enabled()
                or x.dtype != paddle.float32 or not _fusable_config(self.config)):
            return None
        cos, sin = ctx["rope"]
        ctx["rope_rows"] = (cos.reshape([-1, cos.shape[-1]]), sin.reshape([-1, sin.shape[-1]]))
        return fused

    def _apply_prefix(self, batch: int, attention_mask, position_ids, cache, segment_ids):
        """Prefix tuning as peft's ``past_key_values``: every token attends to ``P`` prefix
        keys/values, ``attention_mask`` gains ``P`` leading ones and positions start at ``P``
        (explicit ``position_ids`` are shifted by ``P``). With a cache the first call writes
        the prefix into it. Returns ``(per-layer prefix or None, mask, position_ids)``."""
        prefix = self.prefix_kv(batch) if self.prefix_kv is not None else None
        if not prefix:
            return None, attention_mask, position_ids
        if segment_ids is not None:
            raise ValueError("prefix tuning cannot be combined with segment_ids (packed "
                             "sequences, --zero_padding)")
        if getattr(cache, "paged", False):
            raise ValueError("prefix tuning does not support the paged KV cache")
        n = prefix[0][0].shape[1]
        if attention_mask is not None:
            ones = paddle.ones([batch, n], dtype=attention_mask.dtype)
            attention_mask = paddle.concat([ones, attention_mask], axis=-1)  # (B, P + Tk)
        if position_ids is not None and position_ids.ndim == 2:  # GLM's 2D ones stay (as unshifted)
            position_ids = position_ids + n
        if cache is not None:
            if cache.seq_length == 0:
                for i, (k, v) in enumerate(prefix):
                    cache[i].update(k, v)
            prefix = None  # the keys/values are in the cache now
        return prefix, attention_mask, position_ids

    def logits(self, hidden: paddle.Tensor) -> paddle.Tensor:
        """``(B, T, H)`` hidden states -> ``(B, T, V)`` logits."""
        if hasattr(self.model, "project_out"):
            hidden = self.model.project_out(hidden)
        if self.config.tie_embeddings:
            weight = self.model.embed_tokens.weight
            if weight.dtype != hidden.dtype:  # low-precision storage, float32 compute
                weight = weight.astype(hidden.dtype)
            logits = None
            kernel = _float_kernel(self.model.embed_tokens, hidden, weight.shape[1], weight.shape[0],
                                   True)
            if kernel is not None and (weight.stop_gradient or not paddle.is_grad_enabled()):
                logits = kernel(hidden, weight, None, bits=32, group_size=-1, transposed=True)
            if logits is None:
                logits = paddle.matmul(hidden, weight, transpose_y=True)
        elif self.config.lm_head_norm:  # Baichuan2 NormHead: unit-length rows (columns here)
            w = self.lm_head.weight  # (H, V)
            if w.dtype != hidden.dtype:  # low-precision storage, float32 compute
                w = w.astype(hidden.dtype)
            norm = paddle.sqrt((w * w).sum(axis=0, keepdim=True)).clip(min=1e-12)  # (1, V)
            logits = paddle.matmul(hidden, w / norm)
        else:
            logits = self.lm_head(hidden)
        cap = self.config.final_logit_softcap
        return logits if cap is None else paddle.tanh(logits / cap) * cap

    def forward(self, input_ids: paddle.Tensor, attention_mask: paddle.Tensor | None = None,
                position_ids: paddle.Tensor | None = None, cache: KVCache | None = None,
                logits_to_keep: int = 0, segment_ids: paddle.Tensor | None = None
                ) -> paddle.Tensor:
        """Logits ``(B, T, V)`` (the last ``logits_to_keep`` positions when > 0).

        ``attention_mask`` is ``(B, past + T)`` (1 = token, 0 = left padding); without
        ``position_ids`` positions are ``cumsum(mask) - 1`` as in ``transformers.generate``.
        ``segment_ids`` packs sequences (see :meth:`forward_hidden`).
        """
        if not isinstance(input_ids, paddle.Tensor):  # lists / NumPy arrays of ids
            input_ids = paddle.to_tensor(np.asarray(input_ids), dtype="int64")
        if attention_mask is not None and not isinstance(attention_mask, paddle.Tensor):
            attention_mask = paddle.to_tensor(np.asarray(attention_mask), dtype="int64")
        hidden = self.forward_hidden(input_ids, attention_mask, position_ids, cache, segment_ids)
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        return self.logits(hidden)

    def enable_recompute(self, enabled: bool = True) -> "CausalLM":
        """Gradient checkpointing: keep only layer inputs, recompute the rest in backward."""
        self.recompute = enabled
        return self

    # -- inference helpers -----------------------------------------------------------------
    def new_cache(self, batch: int, max_length: int, dtype: str | None = None) -> KVCache:
        """A preallocated KV cache for ``batch`` rows of up to ``max_length`` positions, in
        the layout named by ``kv_cache_layout``."""
        max_length += getattr(self.prefix_kv, "num_tokens", 0)  # room for a tuned prefix
        return get_kv_cache_layout(self.kv_cache_layout).new_cache(self, batch, max_length,
                                                                   dtype or self.dtype)

    def new_paged_cache(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                        head_dim: int, dtype: str = "float32"):
        """The serving engine's paged pool, in the layout named by ``kv_cache_layout``."""
        return get_kv_cache_layout(self.kv_cache_layout).new_paged_cache(
            self, num_layers, num_blocks, block_size, kv_heads, head_dim, dtype)

    @property
    def kv_cache_dtype(self) -> str:
        """The dtype the KV cache stores (the engine budgets its paged pool by it)."""
        return get_kv_cache_layout(self.kv_cache_layout).storage_dtype(self)

    def cache_needs_refresh(self, cached: int, total: int) -> bool:
        """Whether keys cached for ``cached`` positions are stale once the sequence reaches
        ``total``: with longrope, crossing ``original_max_position_embeddings`` switches to the
        long factors and transformers recomputes the whole cache (Phi-3)."""
        if self._rotary is None or self._rotary.kind != "longrope":
            return False
        original = self.config.rope_scaling["original_max_position_embeddings"]
        return total >= original + 1 and cached <= original

    def generate(self, input_ids, attention_mask=None, **kwargs) -> paddle.Tensor:
        """See :func:`paddlellm.modeling.generation.generate`."""
        from paddlellm.api import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)

    def save_pretrained(self, directory: str, *, max_shard_size: str = "5GB",
                        dtype: str | None = None) -> list[str]:
        """Write a Hugging Face checkpoint (``config.json`` + safetensors) that transformers loads
        (the core's :func:`paddlellm.checkpoint.save_pretrained`; a quantized model's layers and
        ``quantization_config`` included)."""
        from paddlellm.api import save_pretrained

        return save_pretrained(self, directory, max_shard_size=max_shard_size, dtype=dtype)

    #: set by paddlellm.plugin.precision when weights are stored in low precision and computed in
    #: float32 (CPU): the dtype activations and caches use
    compute_dtype: str | None = None

    @property
    def dtype(self) -> str:
        """The dtype activations and KV caches use."""
        return self.compute_dtype or str(self.model.embed_tokens.weight.dtype).replace("paddle.", "")
