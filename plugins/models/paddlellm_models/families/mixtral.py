"""Mixtral: Mistral attention + sparse mixture of experts (softmax top-k, renormalised)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LLAMA_RULES, LlamaLikeFamily, _llama

RULES = tuple(r for r in LLAMA_RULES if ".mlp." not in r[0]) + (
    ("model.layers.{i}.mlp.gate", "model.layers.{i}.block_sparse_moe.gate"),
    ("model.layers.{i}.mlp.experts.{e}.gate_proj", "model.layers.{i}.block_sparse_moe.experts.{e}.w1"),
    ("model.layers.{i}.mlp.experts.{e}.down_proj", "model.layers.{i}.block_sparse_moe.experts.{e}.w2"),
    ("model.layers.{i}.mlp.experts.{e}.up_proj", "model.layers.{i}.block_sparse_moe.experts.{e}.w3"),
)


class MixtralFamily(LlamaLikeFamily):
    name = "mixtral"
    model_types = ("mixtral",)
    architecture = "MixtralForCausalLM"
    description = "Mixtral: sparse MoE (top-k routing) on Mistral blocks"
    default_preset = "mixtral-tiny"
    qkv_bias_key = None
    rules = RULES
    presets = {
        "mixtral-tiny": _llama(64, 128, 2, 4, 2, 32000, 4096, 1000000.0, rms_norm_eps=1e-5,
                               num_local_experts=4, num_experts_per_tok=2),
        "mixtral-8x7b": _llama(4096, 14336, 32, 32, 8, 32000, 32768, 1000000.0,
                               rms_norm_eps=1e-5, num_local_experts=8, num_experts_per_tok=2),
        "mixtral-8x22b": _llama(6144, 16384, 56, 48, 8, 32768, 65536, 1000000.0,
                                rms_norm_eps=1e-5, num_local_experts=8, num_experts_per_tok=2),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{**self.common_from_hf(hf), "sliding_window": hf.get("sliding_window"),
                              "num_experts": hf.get("num_local_experts", 8),
                              "num_experts_per_tok": hf.get("num_experts_per_tok", 2),
                              "norm_topk_prob": True})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), "sliding_window": c.sliding_window,
                "num_local_experts": c.num_experts, "num_experts_per_tok": c.num_experts_per_tok}


family = MixtralFamily()
