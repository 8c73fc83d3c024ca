"""Baichuan-7B/13B and Baichuan2-7B/13B (baichuan-inc's ``modeling_baichuan.py``,
``model_type: baichuan``).

LLaMA blocks with one fused ``W_pack`` (rows [q; k; v], no bias): our ``qkv_proj`` with
``fused_qkv="concat"``. The 7B models use RoPE; the 13B models use ALiBi (Bloom's slopes) and
no rotary. Baichuan2's ``NormHead`` divides each vocab row of ``lm_head`` by its L2 norm
(``lm_head_norm``); the stored weight stays unnormalised. The published ``config.json`` files
do not name these choices, so, as vLLM does, a hidden size of 5120 (13B, not the
``BaiChuanForCausalLM`` 7B class) means ALiBi and a vocabulary of 125696 (Baichuan2) means the
normalised head; what we save also says both explicitly (``position_embedding``, ``norm_head``).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import eos_from_hf, tokens_to_hf
from .llama import ACT_TO_HF, LLAMA_RULES, LlamaLikeFamily, activation_from_hf

RULES = tuple(r for r in LLAMA_RULES if not any(f".self_attn.{n}" in r[0] for n in ("q_proj", "k_proj", "v_proj"))) + (
    ("model.layers.{i}.self_attn.qkv_proj", "model.layers.{i}.self_attn.W_pack"),
)
BAICHUAN2_VOCAB = 125696


def _bc(hidden, inter, layers, heads, vocab, ctx=4096, arch="BaichuanForCausalLM", **kw):
    return {"architectures": [arch], "hidden_size": hidden, "intermediate_size": inter,
            "num_hidden_layers": layers, "num_attention_heads": heads, "vocab_size": vocab,
            "model_max_length": ctx, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, **kw}


class BaichuanFamily(LlamaLikeFamily):
    name = "baichuan"
    model_types = ("baichuan",)
    architecture = "BaichuanForCausalLM"
    description = ("Baichuan/Baichuan2: fused W_pack q/k/v, RoPE (7B) or ALiBi (13B), "
                   "Baichuan2's normalised lm_head")
    aliases = ("baichuan2",)
    alias_presets = {"baichuan2": "baichuan2-tiny"}
    default_preset = "baichuan-tiny"
    rules = RULES
    #: presets say ``norm_head`` explicitly: a vocabulary override must not switch it off
    presets = {
        "baichuan-tiny": _bc(64, 176, 2, 4, 64000, arch="BaiChuanForCausalLM",
                             max_position_embeddings=4096),
        "baichuan2-tiny": _bc(64, 176, 2, 4, BAICHUAN2_VOCAB, max_position_embeddings=4096,
                              norm_head=True),
        "baichuan2-alibi-tiny": _bc(64, 176, 2, 4, BAICHUAN2_VOCAB, position_embedding="ALIBI",
                                    norm_head=True),
        "baichuan-7b": _bc(4096, 11008, 32, 32, 64000, arch="BaiChuanForCausalLM",
                           max_position_embeddings=4096),
        "baichuan-13b": _bc(5120, 13696, 40, 40, 64000),
        "baichuan2-7b": _bc(4096, 11008, 32, 32, BAICHUAN2_VOCAB, max_position_embeddings=4096,
                            norm_head=True),
        "baichuan2-13b": _bc(5120, 13696, 40, 40, BAICHUAN2_VOCAB, norm_head=True),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        archs = hf.get("architectures") or []
        position = str(hf.get("position_embedding") or (
            "ALIBI" if hf["hidden_size"] == 5120 and "BaiChuanForCausalLM" not in archs
            else "ROPE")).upper()
        if position not in ("ROPE", "ALIBI"):
            raise ValueError(f"baichuan: position_embedding must be ROPE or ALIBI, not '{position}'")
        heads = hf["num_attention_heads"]
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=heads,
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings") or hf.get("model_max_length", 4096),
            norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6), activation=activation_from_hf(hf),
            gated_mlp=True, fused_qkv="concat",
            position="alibi" if position == "ALIBI" else "rope", rope_theta=10000.0,
            lm_head_norm=bool(hf.get("norm_head", hf["vocab_size"] == BAICHUAN2_VOCAB)),
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=hf.get("initializer_range", 0.02), **eos_from_hf(hf))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        v1_7b = c.position == "rope" and not c.lm_head_norm
        out = {"architectures": ["BaiChuanForCausalLM" if v1_7b else self.architecture],
               "model_type": "baichuan", "vocab_size": c.vocab_size,
               "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
               "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
               "hidden_act": ACT_TO_HF[c.activation],
               "model_max_length": c.max_position_embeddings, "rms_norm_eps": c.norm_eps,
               "position_embedding": "ALIBI" if c.position == "alibi" else "ROPE",
               "norm_head": c.lm_head_norm, "tie_word_embeddings": c.tie_embeddings,
               "initializer_range": c.initializer_range, **tokens_to_hf(c)}
        if c.position == "rope":
            out["max_position_embeddings"] = c.max_position_embeddings
        return out


family = BaichuanFamily()
