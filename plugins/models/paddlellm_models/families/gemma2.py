"""Gemma 2: Gemma plus sandwich norms, attention/final logit soft-capping, a query scale of
``query_pre_attn_scalar ** -0.5`` and sliding-window attention on alternate layers."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .gemma import GemmaFamily
from .llama import LLAMA_RULES, _llama

L = "model.layers.{i}."
RULES = tuple(r for r in LLAMA_RULES if "layernorm" not in r[0]) + (
    (L + "input_layernorm", L + "input_layernorm"),
    (L + "attn_output_norm", L + "post_attention_layernorm"),
    (L + "post_attention_layernorm", L + "pre_feedforward_layernorm"),  # ours: the pre-MLP norm
    (L + "mlp_output_norm", L + "post_feedforward_layernorm"),
)


def _gemma2(hidden, inter, layers, heads, kv, scalar, **kw):
    return _llama(hidden, inter, layers, heads, kv, 256000, 8192, 10000.0, rms_norm_eps=1e-6,
                  head_dim=256, hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=scalar,
                  sliding_window=4096, attn_logit_softcapping=50.0, final_logit_softcapping=30.0, **kw)


class Gemma2Family(GemmaFamily):
    name = "gemma2"
    model_types = ("gemma2",)
    architecture = "Gemma2ForCausalLM"
    description = "Gemma 2: sandwich norms, logit soft-capping, alternating sliding windows"
    default_preset = "gemma2-tiny"
    rules = RULES
    presets = {
        "gemma2-tiny": _llama(64, 256, 2, 4, 2, 256000, 8192, 10000.0, rms_norm_eps=1e-6,
                              head_dim=16, hidden_activation="gelu_pytorch_tanh",
                              query_pre_attn_scalar=16, sliding_window=64,
                              attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
        "gemma2-2b": _gemma2(2304, 9216, 26, 8, 4, 256),
        "gemma2-9b": _gemma2(3584, 14336, 42, 16, 8, 256),
        "gemma2-27b": _gemma2(4608, 36864, 46, 32, 16, 144),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        base = super().config_from_hf(hf)
        layers = base.num_layers
        types = hf.get("layer_types") or ["sliding_attention" if (i + 1) % 2 else "full_attention"
                                          for i in range(layers)]
        window = hf.get("sliding_window", 4096)
        full = [i for i, t in enumerate(types) if t != "sliding_attention"]
        if window is None or len(full) == layers:
            window, full = None, []
        return base.replace(
            sandwich_norm=True, sliding_window=window, full_attention_layers=full,
            attention_scale=float(hf.get("query_pre_attn_scalar", 256)) ** -0.5,
            attention_softcap=hf.get("attn_logit_softcapping", 50.0),
            final_logit_softcap=hf.get("final_logit_softcapping", 30.0))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        full = set(c.full_attention_layers) if c.sliding_window is not None else set(range(c.num_layers))
        scalar = round(c.attention_scale ** -2, 6)
        return {**super().config_to_hf(c),
                "query_pre_attn_scalar": int(scalar) if scalar == int(scalar) else scalar,
                "sliding_window": c.sliding_window,
                "layer_types": ["full_attention" if i in full else "sliding_attention"
                                for i in range(c.num_layers)],
                "attn_logit_softcapping": c.attention_softcap,
                "final_logit_softcapping": c.final_logit_softcap}


family = Gemma2Family()
