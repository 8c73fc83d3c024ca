"""Bloom: ALiBi, LayerNorm (also on the embeddings), tanh GELU, head-interleaved fused q/k/v
(``query_key_value`` is our ``self_attn.qkv_proj`` with ``fused_qkv="heads"``)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import Family, eos_from_hf, tokens_to_hf

RULES = (
    ("model.embed_tokens", "transformer.word_embeddings"),
    ("model.embed_norm", "transformer.word_embeddings_layernorm"),
    ("model.norm", "transformer.ln_f"),
    ("model.layers.{i}.input_layernorm", "transformer.h.{i}.input_layernorm"),
    ("model.layers.{i}.post_attention_layernorm", "transformer.h.{i}.post_attention_layernorm"),
    ("model.layers.{i}.self_attn.qkv_proj", "transformer.h.{i}.self_attention.query_key_value"),
    ("model.layers.{i}.self_attn.o_proj", "transformer.h.{i}.self_attention.dense"),
    ("model.layers.{i}.mlp.up_proj", "transformer.h.{i}.mlp.dense_h_to_4h"),
    ("model.layers.{i}.mlp.down_proj", "transformer.h.{i}.mlp.dense_4h_to_h"),
)


def _bloom(hidden, layers, heads, vocab=250880):
    return {"hidden_size": hidden, "n_layer": layers, "n_head": heads, "vocab_size": vocab}


class BloomFamily(Family):
    name = "bloom"
    model_types = ("bloom",)
    architecture = "BloomForCausalLM"
    description = "Bloom: ALiBi, LayerNorm incl. embedding norm, GELU, tied head"
    default_preset = "bloom-tiny"
    rules = RULES
    presets = {
        "bloom-tiny": _bloom(64, 2, 4),
        "bloom-560m": _bloom(1024, 24, 16), "bloom-1b1": _bloom(1536, 24, 16),
        "bloom-1b7": _bloom(2048, 24, 16), "bloom-3b": _bloom(2560, 30, 32),
        "bloom-7b1": _bloom(4096, 30, 32),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        if hf.get("apply_residual_connection_post_layernorm"):
            raise ValueError("bloom checkpoints with apply_residual_connection_post_layernorm "
                             "are not supported")
        hidden = hf.get("hidden_size") or hf.get("n_embed")
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=hidden,
            num_layers=hf.get("n_layer") or hf.get("num_hidden_layers"),
            num_heads=hf.get("n_head") or hf.get("num_attention_heads"),
            intermediate_size=4 * hidden, max_position_embeddings=hf.get("seq_length", 2048),
            norm="layer", norm_eps=hf.get("layer_norm_epsilon", 1e-5), embedding_norm=True,
            activation="gelu_tanh", gated_mlp=False, qkv_bias=True, fused_qkv="heads", out_bias=True,
            mlp_bias=True, position="alibi", tie_embeddings=hf.get("tie_word_embeddings", True),
            initializer_range=hf.get("initializer_range", 0.02), **eos_from_hf(hf))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {"architectures": [self.architecture], "model_type": "bloom",
                "vocab_size": c.vocab_size, "hidden_size": c.hidden_size, "n_layer": c.num_layers,
                "n_head": c.num_heads, "layer_norm_epsilon": c.norm_eps,
                "apply_residual_connection_post_layernorm": False,
                "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.initializer_range,
                **tokens_to_hf(c)}

    def from_hf_tensor(self, hf_name, array, config):
        if not hf_name.startswith(("transformer.", "lm_head")):
            hf_name = "transformer." + hf_name  # bigscience checkpoints saved from BloomModel
        if hf_name == "lm_head.weight" and config.tie_embeddings:
            return []
        return super().from_hf_tensor(hf_name, array, config)


family = BloomFamily()
