"""Qwen2-MoE (Qwen1.5-MoE): Qwen2 attention + routed experts + a sigmoid-gated shared expert."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LLAMA_RULES, LlamaLikeFamily, _llama
from .qwen2 import qwen_window, qwen_window_to_hf

RULES = LLAMA_RULES + tuple(
    (f"model.layers.{{i}}.mlp.{m}", f"model.layers.{{i}}.mlp.{m}") for m in (
        "gate", "experts.{e}.gate_proj", "experts.{e}.up_proj", "experts.{e}.down_proj",
        "shared_expert.gate_proj", "shared_expert.up_proj", "shared_expert.down_proj",
        "shared_expert_gate"))


class Qwen2MoeFamily(LlamaLikeFamily):
    name = "qwen2_moe"
    model_types = ("qwen2_moe",)
    architecture = "Qwen2MoeForCausalLM"
    description = "Qwen2-MoE: routed experts + gated shared expert, q/k/v bias"
    aliases = ("qwen-moe",)
    default_preset = "qwen-moe-tiny"
    qkv_bias_key = None
    fixed_qkv_bias = True
    rules = RULES
    presets = {
        "qwen-moe-tiny": _llama(64, 176, 2, 4, 2, 151936, 4096, 1000000.0, rms_norm_eps=1e-6,
                                num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64,
                                shared_expert_intermediate_size=128),
        "qwen1.5-moe-a2.7b": _llama(2048, 5632, 24, 16, 16, 151936, 8192, 1000000.0,
                                    rms_norm_eps=1e-6, num_experts=60, num_experts_per_tok=4,
                                    moe_intermediate_size=1408,
                                    shared_expert_intermediate_size=5632),
        "qwen2-57b-a14b": _llama(3584, 18944, 28, 28, 4, 151936, 32768, 1000000.0,
                                 rms_norm_eps=1e-6, num_experts=64, num_experts_per_tok=8,
                                 moe_intermediate_size=2560,
                                 shared_expert_intermediate_size=20480),
    }

    def moe_from_hf(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        """Routed experts, dense layers (``mlp_only_layers``, ``decoder_sparse_step``)."""
        layers, step = hf["num_hidden_layers"], hf.get("decoder_sparse_step", 1)
        only = set(hf.get("mlp_only_layers") or [])
        experts = hf.get("num_experts") or hf.get("num_local_experts") or 60  # qwen3_moe in v5
        return {"num_experts": experts,
                "num_experts_per_tok": hf.get("num_experts_per_tok", 4),
                "moe_intermediate_size": hf.get("moe_intermediate_size", 1408),
                "norm_topk_prob": bool(hf.get("norm_topk_prob", False)),
                "dense_layers": [i for i in range(layers) if i in only or (i + 1) % step != 0]}

    def moe_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {"num_experts": c.num_experts, "num_experts_per_tok": c.num_experts_per_tok,
                "moe_intermediate_size": c.moe_intermediate_size, "norm_topk_prob": c.norm_topk_prob,
                "decoder_sparse_step": 1, "mlp_only_layers": list(c.dense_layers)}

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{
            **self.common_from_hf(hf), "out_bias": False, **qwen_window(hf), **self.moe_from_hf(hf),
            "shared_expert_intermediate_size": hf.get("shared_expert_intermediate_size", 5632),
            "shared_expert_gate": True})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), **self.moe_to_hf(c), **qwen_window_to_hf(c),
                "shared_expert_intermediate_size": c.shared_expert_intermediate_size}


family = Qwen2MoeFamily()
