"""LLaMA 1/2/3/3.1+ (RMSNorm, SwiGLU, RoPE incl. llama3/linear/dynamic/yarn scaling) and the
shared adapter of the LLaMA-shaped families (Qwen2, Mistral, Mixtral, Qwen2-MoE, Gemma)."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import Family, eos_from_hf, rope_from_hf, rope_to_hf, tokens_to_hf

ACT_FROM_HF = {"silu": "silu", "swish": "silu", "gelu": "gelu", "gelu_new": "gelu_tanh",
               "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh", "relu": "relu"}
ACT_TO_HF = {"silu": "silu", "gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu"}

LLAMA_RULES = (
    ("model.embed_tokens", "model.embed_tokens"),
    ("model.norm", "model.norm"),
    ("lm_head", "lm_head"),
    ("model.layers.{i}.input_layernorm", "model.layers.{i}.input_layernorm"),
    ("model.layers.{i}.post_attention_layernorm", "model.layers.{i}.post_attention_layernorm"),
    ("model.layers.{i}.self_attn.q_proj", "model.layers.{i}.self_attn.q_proj"),
    ("model.layers.{i}.self_attn.k_proj", "model.layers.{i}.self_attn.k_proj"),
    ("model.layers.{i}.self_attn.v_proj", "model.layers.{i}.self_attn.v_proj"),
    ("model.layers.{i}.self_attn.o_proj", "model.layers.{i}.self_attn.o_proj"),
    ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.gate_proj"),
    ("model.layers.{i}.mlp.up_proj", "model.layers.{i}.mlp.up_proj"),
    ("model.layers.{i}.mlp.down_proj", "model.layers.{i}.mlp.down_proj"),
)


def activation_from_hf(hf: Mapping[str, Any], default: str = "silu") -> str:
    name = hf.get("hidden_activation") or hf.get("hidden_act") or default
    if name not in ACT_FROM_HF:
        raise ValueError(f"unsupported activation '{name}'; supported: {', '.join(ACT_FROM_HF)}")
    return ACT_FROM_HF[name]


class LlamaLikeFamily(Family):
    """RMSNorm + gated MLP + RoPE decoders; subclasses adjust biases, windows, MoE, norms."""

    rules = LLAMA_RULES
    tie_default = False
    qkv_bias_key: str | None = "attention_bias"  # HF key switching q/k/v (and o) biases
    fixed_qkv_bias: bool = False  # Qwen2: q/k/v always biased, o never
    default_head_dim: int | None = None  # transformers' default when config.json has none

    def common_from_hf(self, hf: Mapping[str, Any]) -> dict[str, Any]:
        heads = hf["num_attention_heads"]
        theta, scaling = rope_from_hf(hf)
        attn_bias = bool(hf.get(self.qkv_bias_key, False)) if self.qkv_bias_key else False
        return dict(
            family=self.name,
            vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or self.default_head_dim or hf["hidden_size"] // heads,
            intermediate_size=hf.get("intermediate_size", 4 * hf["hidden_size"]),
            max_position_embeddings=hf.get("max_position_embeddings", 2048),
            norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6),
            activation=activation_from_hf(hf), gated_mlp=True,
            qkv_bias=self.fixed_qkv_bias or attn_bias, out_bias=attn_bias,
            mlp_bias=bool(hf.get("mlp_bias", False)),
            position="rope", rope_theta=theta, rope_scaling=scaling,
            tie_embeddings=bool(hf.get("tie_word_embeddings", self.tie_default)),
            initializer_range=hf.get("initializer_range", 0.02),
            **eos_from_hf(hf),
        )

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        return ModelConfig(**self.common_from_hf(hf))

    def common_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        out = {
            "architectures": [self.architecture], "model_type": self.model_types[0],
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
            "head_dim": c.head_dim, "hidden_act": ACT_TO_HF[c.activation],
            "max_position_embeddings": c.max_position_embeddings, "rms_norm_eps": c.norm_eps,
            "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.initializer_range,
            **rope_to_hf(c), **tokens_to_hf(c),
        }
        if self.qkv_bias_key:
            out[self.qkv_bias_key] = c.out_bias
        return out

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {**self.common_to_hf(c), "mlp_bias": c.mlp_bias}


def _llama(hidden, inter, layers, heads, kv, vocab, ctx, theta, **kw):
    return {"hidden_size": hidden, "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
            "max_position_embeddings": ctx, "rope_theta": theta, **kw}


LLAMA31_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


class LlamaFamily(LlamaLikeFamily):
    name = "llama"
    model_types = ("llama",)
    architecture = "LlamaForCausalLM"
    description = "LLaMA 1/2/3/3.1+: RMSNorm, SwiGLU, RoPE (llama3/linear/dynamic/yarn scaling)"
    aliases = ("llama2", "llama3", "llama-3")
    default_preset = "llama-tiny"
    presets = {
        "llama-tiny": _llama(64, 176, 2, 4, 2, 32000, 2048, 10000.0, rms_norm_eps=1e-5),
        "llama-7b": _llama(4096, 11008, 32, 32, 32, 32000, 2048, 10000.0, rms_norm_eps=1e-6),
        "llama-2-7b": _llama(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0, rms_norm_eps=1e-5),
        "llama-2-13b": _llama(5120, 13824, 40, 40, 40, 32000, 4096, 10000.0, rms_norm_eps=1e-5),
        "llama-2-70b": _llama(8192, 28672, 80, 64, 8, 32000, 4096, 10000.0, rms_norm_eps=1e-5),
        "llama-3-8b": _llama(4096, 14336, 32, 32, 8, 128256, 8192, 500000.0, rms_norm_eps=1e-5),
        "llama-3-70b": _llama(8192, 28672, 80, 64, 8, 128256, 8192, 500000.0, rms_norm_eps=1e-5),
        "llama-3.1-8b": _llama(4096, 14336, 32, 32, 8, 128256, 131072, 500000.0,
                               rms_norm_eps=1e-5, rope_scaling=LLAMA31_ROPE),
        "llama-3.1-70b": _llama(8192, 28672, 80, 64, 8, 128256, 131072, 500000.0,
                                rms_norm_eps=1e-5, rope_scaling=LLAMA31_ROPE),
        "llama-3.2-1b": _llama(2048, 8192, 16, 32, 8, 128256, 131072, 500000.0,
                               rms_norm_eps=1e-5, tie_word_embeddings=True,
                               rope_scaling={**LLAMA31_ROPE, "factor": 32.0}),
        "llama-3.2-3b": _llama(3072, 8192, 28, 24, 8, 128256, 131072, 500000.0,
                               rms_norm_eps=1e-5, tie_word_embeddings=True,
                               rope_scaling={**LLAMA31_ROPE, "factor": 32.0}),
    }


family = LlamaFamily()
