"""Qwen2 / Qwen2.5: LLaMA blocks with biases on q/k/v (none on o)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LlamaLikeFamily, _llama


def qwen_window(hf: Mapping[str, Any]) -> int | None:
    if not hf.get("use_sliding_window", False):
        return None
    if hf.get("max_window_layers", 0) < hf["num_hidden_layers"]:
        raise ValueError("Qwen2 checkpoints with sliding windows on only some layers "
                         "(max_window_layers < num_hidden_layers) are not supported")
    return hf.get("sliding_window")


class Qwen2Family(LlamaLikeFamily):
    name = "qwen2"
    model_types = ("qwen2",)
    architecture = "Qwen2ForCausalLM"
    description = "Qwen2/Qwen2.5: RMSNorm, SwiGLU, RoPE, q/k/v bias"
    aliases = ("qwen", "qwen2.5")
    default_preset = "qwen-tiny"
    qkv_bias_key = None
    fixed_qkv_bias = True
    presets = {
        "qwen-tiny": _llama(64, 176, 2, 4, 2, 151936, 4096, 1000000.0, rms_norm_eps=1e-6,
                            tie_word_embeddings=True),
        "qwen2.5-0.5b": _llama(896, 4864, 24, 14, 2, 151936, 32768, 1000000.0,
                               rms_norm_eps=1e-6, tie_word_embeddings=True),
        "qwen2.5-1.5b": _llama(1536, 8960, 28, 12, 2, 151936, 32768, 1000000.0,
                               rms_norm_eps=1e-6, tie_word_embeddings=True),
        "qwen2.5-3b": _llama(2048, 11008, 36, 16, 2, 151936, 32768, 1000000.0,
                             rms_norm_eps=1e-6, tie_word_embeddings=True),
        "qwen2.5-7b": _llama(3584, 18944, 28, 28, 4, 152064, 32768, 1000000.0, rms_norm_eps=1e-6),
        "qwen2.5-14b": _llama(5120, 13824, 48, 40, 8, 152064, 32768, 1000000.0, rms_norm_eps=1e-5),
        "qwen2.5-32b": _llama(5120, 27648, 64, 40, 8, 152064, 32768, 1000000.0, rms_norm_eps=1e-5),
        "qwen2.5-72b": _llama(8192, 29568, 80, 64, 8, 152064, 32768, 1000000.0, rms_norm_eps=1e-5),
        "qwen2-0.5b": _llama(896, 4864, 24, 14, 2, 151936, 32768, 1000000.0,
                             rms_norm_eps=1e-6, tie_word_embeddings=True),
        "qwen2-7b": _llama(3584, 18944, 28, 28, 4, 152064, 32768, 1000000.0, rms_norm_eps=1e-6),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{**self.common_from_hf(hf), "out_bias": False,
                              "sliding_window": qwen_window(hf)})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        out = self.common_to_hf(c)
        out.update(use_sliding_window=c.sliding_window is not None,
                   sliding_window=c.sliding_window, max_window_layers=c.num_layers)
        return out


family = Qwen2Family()
