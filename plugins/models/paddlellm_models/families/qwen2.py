"""Qwen2 / Qwen2.5: LLaMA blocks with biases on q/k/v (none on o)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LlamaLikeFamily, _llama


def qwen_window(hf: Mapping[str, Any]) -> dict[str, Any]:
    """``sliding_window`` / ``full_attention_layers`` from ``use_sliding_window``,
    ``max_window_layers`` (layers from it on slide) or transformers 5's ``layer_types``."""
    window = hf.get("sliding_window") if hf.get("use_sliding_window", False) else None
    layers = hf["num_hidden_layers"]
    if window is None:
        return {"sliding_window": None, "full_attention_layers": []}
    types = hf.get("layer_types")
    if types:
        full = [i for i, t in enumerate(types) if t != "sliding_attention"]
    else:
        full = list(range(min(hf.get("max_window_layers", layers), layers)))
    if len(full) == layers:
        return {"sliding_window": None, "full_attention_layers": []}
    return {"sliding_window": window, "full_attention_layers": full}


def qwen_window_to_hf(c: ModelConfig) -> dict[str, Any]:
    full = set(c.full_attention_layers) if c.sliding_window is not None else set(range(c.num_layers))
    prefix = 0
    while prefix in full:
        prefix += 1
    return {"use_sliding_window": c.sliding_window is not None, "sliding_window": c.sliding_window,
            "max_window_layers": prefix,
            "layer_types": ["full_attention" if i in full else "sliding_attention"
                            for i in range(c.num_layers)]}


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
        return ModelConfig(**{**self.common_from_hf(hf), "out_bias": False, **qwen_window(hf)})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), **qwen_window_to_hf(c)}


family = Qwen2Family()
