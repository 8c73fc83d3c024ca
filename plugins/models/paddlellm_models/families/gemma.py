"""Gemma: embeddings scaled by sqrt(hidden), (1 + w) RMSNorm, GeGLU (tanh GELU), tied head."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LlamaLikeFamily, _llama


class GemmaFamily(LlamaLikeFamily):
    name = "gemma"
    model_types = ("gemma",)
    architecture = "GemmaForCausalLM"
    description = "Gemma: scaled embeddings, (1+w) RMSNorm, GeGLU, tied embeddings"
    default_preset = "gemma-tiny"
    tie_default = True
    presets = {
        "gemma-tiny": _llama(64, 256, 2, 4, 1, 256000, 8192, 10000.0, rms_norm_eps=1e-6,
                             head_dim=16, hidden_activation="gelu_pytorch_tanh"),
        "gemma-2b": _llama(2048, 16384, 18, 8, 1, 256000, 8192, 10000.0, rms_norm_eps=1e-6,
                           head_dim=256, hidden_activation="gelu_pytorch_tanh"),
        "gemma-7b": _llama(3072, 24576, 28, 16, 16, 256000, 8192, 10000.0, rms_norm_eps=1e-6,
                           head_dim=256, hidden_activation="gelu_pytorch_tanh"),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        hf = {"hidden_activation": "gelu_pytorch_tanh", **hf}
        if not hf.get("hidden_activation"):  # transformers maps a null activation to tanh GELU
            hf["hidden_activation"] = "gelu_pytorch_tanh"
        common = self.common_from_hf(hf)
        return ModelConfig(**{**common, "norm_unit_offset": True,
                              "embedding_multiplier": float(common["hidden_size"]) ** 0.5})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        out = self.common_to_hf(c)
        out["hidden_activation"] = out.pop("hidden_act")
        return out


family = GemmaFamily()
