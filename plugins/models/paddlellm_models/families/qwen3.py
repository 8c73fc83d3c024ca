"""Qwen3: LLaMA blocks with RMSNorm on each query/key head (``q_norm``/``k_norm``), no q/k/v bias."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .llama import LLAMA_RULES, LlamaLikeFamily, _llama
from .qwen2 import qwen_window, qwen_window_to_hf

RULES = LLAMA_RULES + (
    ("model.layers.{i}.self_attn.q_norm", "model.layers.{i}.self_attn.q_norm"),
    ("model.layers.{i}.self_attn.k_norm", "model.layers.{i}.self_attn.k_norm"),
)


def _qwen3(hidden, inter, layers, heads, kv, tie, **kw):
    return _llama(hidden, inter, layers, heads, kv, 151936, 40960, 1000000.0, rms_norm_eps=1e-6,
                  head_dim=128, tie_word_embeddings=tie, **kw)


class Qwen3Family(LlamaLikeFamily):
    name = "qwen3"
    model_types = ("qwen3",)
    architecture = "Qwen3ForCausalLM"
    description = "Qwen3: RMSNorm on query/key heads, explicit head_dim, SwiGLU, RoPE"
    default_preset = "qwen3-tiny"
    default_head_dim = 128
    rules = RULES
    presets = {
        "qwen3-tiny": _llama(64, 176, 2, 4, 2, 151936, 4096, 1000000.0, rms_norm_eps=1e-6,
                             head_dim=32, tie_word_embeddings=True),
        "qwen3-0.6b": _qwen3(1024, 3072, 28, 16, 8, True),
        "qwen3-1.7b": _qwen3(2048, 6144, 28, 16, 8, True),
        "qwen3-4b": _qwen3(2560, 9728, 36, 32, 8, True),
        "qwen3-8b": _qwen3(4096, 12288, 36, 32, 8, False),
        "qwen3-14b": _qwen3(5120, 17408, 40, 40, 8, False),
        "qwen3-32b": _qwen3(5120, 25600, 64, 64, 8, False),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**{**self.common_from_hf(hf), "qk_norm": True, **qwen_window(hf)})

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), **qwen_window_to_hf(c)}


family = Qwen3Family()
