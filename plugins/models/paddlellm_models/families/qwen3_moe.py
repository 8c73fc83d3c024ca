"""Qwen3-MoE: Qwen3 attention (q/k head norms) + routed experts (no shared expert)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LLAMA_RULES, LlamaLikeFamily, _llama
from .qwen2 import qwen_window, qwen_window_to_hf
from .qwen2_moe import Qwen2MoeFamily
from .qwen3 import RULES as QWEN3_RULES

RULES = QWEN3_RULES + tuple(
    (f"model.layers.{{i}}.mlp.{m}", f"model.layers.{{i}}.mlp.{m}") for m in (
        "gate", "experts.{e}.gate_proj", "experts.{e}.up_proj", "experts.{e}.down_proj"))


def _moe(hidden, layers, heads, kv, experts, top_k, inter, **kw):
    return _llama(hidden, 4 * hidden, layers, heads, kv, 151936, 40960, 1000000.0,
                  rms_norm_eps=1e-6, head_dim=128, num_experts=experts,
                  num_experts_per_tok=top_k, moe_intermediate_size=inter, norm_topk_prob=True, **kw)


class Qwen3MoeFamily(LlamaLikeFamily):
    name = "qwen3_moe"
    model_types = ("qwen3_moe",)
    architecture = "Qwen3MoeForCausalLM"
    description = "Qwen3-MoE: q/k head norms, routed experts (top-k, renormalised)"
    default_preset = "qwen3-moe-tiny"
    default_head_dim = 128
    rules = RULES
    moe_from_hf = Qwen2MoeFamily.moe_from_hf
    moe_to_hf = Qwen2MoeFamily.moe_to_hf
    presets = {
        "qwen3-moe-tiny": _llama(64, 176, 2, 4, 2, 151936, 4096, 1000000.0, rms_norm_eps=1e-6,
                                 head_dim=32, num_experts=4, num_experts_per_tok=2,
                                 moe_intermediate_size=64, norm_topk_prob=True),
        "qwen3-30b-a3b": _moe(2048, 48, 32, 4, 128, 8, 768),
        "qwen3-235b-a22b": _moe(4096, 94, 64, 4, 128, 8, 1536),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{**self.common_from_hf(hf), "qk_norm": True, **qwen_window(hf),
                              **self.moe_from_hf({"norm_topk_prob": True, **hf})})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        # transformers 5 names the expert count num_local_experts, 4.x num_experts
        return {**self.common_to_hf(c), **self.moe_to_hf(c), **qwen_window_to_hf(c),
                "num_local_experts": c.num_experts}


family = Qwen3MoeFamily()
