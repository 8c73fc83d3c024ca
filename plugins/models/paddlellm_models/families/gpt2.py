"""GPT-2 / GPT-3 style: learned positions, LayerNorm, tanh GELU, fused Conv1D q/k/v
(``c_attn`` is our ``self_attn.qkv_proj``, rows [q; k; v], so LoRA can target it)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..config import ModelConfig
from .base import Family, eos_from_hf, tokens_to_hf
from .llama import ACT_FROM_HF

RULES = (
    ("model.embed_tokens", "transformer.wte"),
    ("model.embed_positions", "transformer.wpe"),
    ("model.norm", "transformer.ln_f"),
    ("model.layers.{i}.input_layernorm", "transformer.h.{i}.ln_1"),
    ("model.layers.{i}.post_attention_layernorm", "transformer.h.{i}.ln_2"),
    ("model.layers.{i}.self_attn.qkv_proj", "transformer.h.{i}.attn.c_attn"),
    ("model.layers.{i}.self_attn.o_proj", "transformer.h.{i}.attn.c_proj"),
    ("model.layers.{i}.mlp.up_proj", "transformer.h.{i}.mlp.c_fc"),
    ("model.layers.{i}.mlp.down_proj", "transformer.h.{i}.mlp.c_proj"),
)


def _gpt(embd, layers, heads, ctx=1024, vocab=50257, **kw):
    return {"n_embd": embd, "n_layer": layers, "n_head": heads, "n_positions": ctx,
            "vocab_size": vocab, **kw}


class GPT2Family(Family):
    name = "gpt2"
    model_types = ("gpt2",)
    architecture = "GPT2LMHeadModel"
    description = "GPT-2/GPT-3 style: learned positions, LayerNorm, GELU, tied head"
    aliases = ("gpt", "gpt3")
    default_preset = "gpt-tiny"
    rules = RULES
    ignore = (r".*\.attn\.(masked_)?bias$",)
    #: its Hugging Face linears are Conv1D (weights (in, out)): peft adapters say fan_in_fan_out
    fan_in_fan_out = True
    presets = {
        "gpt-tiny": _gpt(64, 2, 4, 1024),
        "gpt2": _gpt(768, 12, 12), "gpt2-medium": _gpt(1024, 24, 16),
        "gpt2-large": _gpt(1280, 36, 20), "gpt2-xl": _gpt(1600, 48, 25),
        "gpt3-125m": _gpt(768, 12, 12, 2048), "gpt3-350m": _gpt(1024, 24, 16, 2048),
        "gpt3-1.3b": _gpt(2048, 24, 16, 2048), "gpt3-2.7b": _gpt(2560, 32, 32, 2048),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        for key in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(key):
                raise ValueError(f"gpt2 checkpoints with {key}=true are not supported")
        embd = hf["n_embd"]
        act = hf.get("activation_function", "gelu_new")
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=embd,
            num_layers=hf["n_layer"], num_heads=hf["n_head"],
            intermediate_size=hf.get("n_inner") or 4 * embd,
            max_position_embeddings=hf.get("n_positions", 1024), norm="layer",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), activation=ACT_FROM_HF[act],
            gated_mlp=False, qkv_bias=True, fused_qkv="concat", out_bias=True, mlp_bias=True,
            position="learned", tie_embeddings=hf.get("tie_word_embeddings", True),
            attention_scale=None if hf.get("scale_attn_weights", True) else 1.0,
            initializer_range=hf.get("initializer_range", 0.02), **eos_from_hf(hf))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {"architectures": [self.architecture], "model_type": "gpt2",
                "vocab_size": c.vocab_size, "n_embd": c.hidden_size, "n_layer": c.num_layers,
                "n_head": c.num_heads, "n_inner": c.intermediate_size,
                "n_positions": c.max_position_embeddings, "layer_norm_epsilon": c.norm_eps,
                "activation_function": "gelu_new" if c.activation == "gelu_tanh" else c.activation,
                "scale_attn_weights": c.attention_scale is None,
                "tie_word_embeddings": c.tie_embeddings,
                "initializer_range": c.initializer_range, **tokens_to_hf(c)}

    def from_hf_tensor(self, hf_name: str, array: np.ndarray, config: ModelConfig):
        if not hf_name.startswith(("transformer.", "lm_head")):
            hf_name = "transformer." + hf_name  # the original OpenAI-converted checkpoints
        if self.is_ignored(hf_name) or hf_name == "lm_head.weight":
            return []
        ours = self.rename(hf_name, to_hf=False)
        if ours is None:
            raise KeyError(f"gpt2: unexpected tensor '{hf_name}' in the checkpoint")
        conv = hf_name.endswith("weight") and (".attn." in hf_name or ".mlp." in hf_name)
        return [(ours, array.T if conv else array)]  # Conv1D (in, out) -> torch layout

    def to_hf_state(self, state, config):
        out = {}
        for name, array in state.items():
            hf = self.rename(name, to_hf=True)
            if hf is None:
                raise KeyError(f"gpt2: no Hugging Face name for '{name}'")
            conv = hf.endswith("weight") and (".attn." in hf or ".mlp." in hf)
            out[hf] = array.T if conv else array
        return out


family = GPT2Family()
