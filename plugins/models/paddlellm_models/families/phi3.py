"""Phi-3 / Phi-3.5 / Phi-4-mini: fused ``qkv_proj`` and ``gate_up_proj`` (our fused modules
of the same names, so adapters on them map 1:1), sliding window, partial rotary
(``partial_rotary_factor``) and ``longrope`` scaling."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import QKV
from .llama import LLAMA_RULES, LlamaLikeFamily, _llama

RULES = tuple(r for r in LLAMA_RULES if ".mlp.gate_proj" not in r[0] and ".mlp.up_proj" not in r[0]
              and not any(f".self_attn.{n}" in r[0] for n in QKV)) + (
    ("model.layers.{i}.self_attn.qkv_proj", "model.layers.{i}.self_attn.qkv_proj"),
    ("model.layers.{i}.mlp.gate_up_proj", "model.layers.{i}.mlp.gate_up_proj"),
)


def _phi3(hidden, inter, layers, heads, kv, vocab, ctx, **kw):
    return _llama(hidden, inter, layers, heads, kv, vocab, ctx, 10000.0, rms_norm_eps=1e-5, **kw)


class Phi3Family(LlamaLikeFamily):
    name = "phi3"
    model_types = ("phi3",)
    architecture = "Phi3ForCausalLM"
    description = "Phi-3: fused qkv/gate_up projections, sliding window, longrope, partial rotary"
    aliases = ("phi",)
    default_preset = "phi3-tiny"
    qkv_bias_key = None
    rules = RULES
    presets = {
        "phi3-tiny": _phi3(64, 176, 2, 4, 4, 32064, 4096, sliding_window=4095,
                           original_max_position_embeddings=4096),
        "phi-3-mini-4k": _phi3(3072, 8192, 32, 32, 32, 32064, 4096, sliding_window=2047,
                               original_max_position_embeddings=4096),
        "phi-3-medium-4k": _phi3(5120, 17920, 40, 40, 10, 32064, 4096, sliding_window=2047,
                                 original_max_position_embeddings=4096),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        common = self.common_from_hf(hf)
        scaling = common["rope_scaling"]
        partial = float((hf.get("rope_parameters") or {}).get(
            "partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)))
        if scaling is not None:
            scaling.pop("partial_rotary_factor", None)
            if scaling["rope_type"] == "longrope":  # transformers prefers the top-level value
                scaling["original_max_position_embeddings"] = hf.get(
                    "original_max_position_embeddings",
                    scaling.get("original_max_position_embeddings", common["max_position_embeddings"]))
        rotary = int(common["head_dim"] * partial)
        return ModelConfig(**{**common, "sliding_window": hf.get("sliding_window"),
                              "rotary_dim": None if rotary == common["head_dim"] else rotary,
                              "fused_qkv": "concat", "fused_gate_up": True})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        out = {**self.common_to_hf(c), "sliding_window": c.sliding_window,
               "partial_rotary_factor": (c.rotary_dim or c.head_dim) / c.head_dim}
        out["rope_parameters"]["partial_rotary_factor"] = out["partial_rotary_factor"]
        if c.rope_scaling and "original_max_position_embeddings" in c.rope_scaling:
            out["original_max_position_embeddings"] = c.rope_scaling["original_max_position_embeddings"]
        return out


family = Phi3Family()
