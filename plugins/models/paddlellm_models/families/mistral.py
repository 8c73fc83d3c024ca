"""Mistral: LLaMA blocks with sliding-window attention."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LlamaLikeFamily, _llama


class MistralFamily(LlamaLikeFamily):
    name = "mistral"
    model_types = ("mistral",)
    architecture = "MistralForCausalLM"
    description = "Mistral: LLaMA blocks + sliding-window attention"
    default_preset = "mistral-tiny"
    qkv_bias_key = None
    presets = {
        "mistral-tiny": _llama(64, 176, 2, 4, 2, 32000, 4096, 10000.0, rms_norm_eps=1e-5,
                               sliding_window=64),
        "mistral-7b-v0.1": _llama(4096, 14336, 32, 32, 8, 32000, 32768, 10000.0,
                                  rms_norm_eps=1e-5, sliding_window=4096),
        "mistral-7b-v0.3": _llama(4096, 14336, 32, 32, 8, 32768, 32768, 1000000.0,
                                  rms_norm_eps=1e-5, sliding_window=None),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{**self.common_from_hf(hf), "sliding_window": hf.get("sliding_window")})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), "sliding_window": c.sliding_window}


family = MistralFamily()
