"""ChatGLM2-6B / ChatGLM3-6B (THUDM's ``modeling_chatglm.py``, ``model_type: chatglm``).

Multi-query attention through one fused ``query_key_value`` (rows [q; k; v], with bias),
rotary embeddings on the first half of each head's dimensions with interleaved pairs,
SwiGLU through one fused ``dense_h_to_4h`` (rows [gate; up]), RMSNorm, an untied
``output_layer``. Everything maps onto the configurable decoder: ``fused_qkv="concat"``,
``fused_gate_up``, ``rotary_dim = kv_channels / 2`` and ``rotary_interleaved``.
ChatGLM-6B (v1: 2D positions, GLM mask) shares the ``model_type``; it is the ``chatglm``
family (:mod:`.chatglm`), and :meth:`ChatGLM2Family.accepts_config` tells the two apart.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import Family

E = "transformer.encoder"
RULES = (
    ("model.embed_tokens", "transformer.embedding.word_embeddings"),
    ("model.norm", f"{E}.final_layernorm"),
    ("lm_head", "transformer.output_layer"),
    ("model.layers.{i}.input_layernorm", E + ".layers.{i}.input_layernorm"),
    ("model.layers.{i}.post_attention_layernorm", E + ".layers.{i}.post_attention_layernorm"),
    ("model.layers.{i}.self_attn.qkv_proj", E + ".layers.{i}.self_attention.query_key_value"),
    ("model.layers.{i}.self_attn.o_proj", E + ".layers.{i}.self_attention.dense"),
    ("model.layers.{i}.mlp.gate_up_proj", E + ".layers.{i}.mlp.dense_h_to_4h"),
    ("model.layers.{i}.mlp.down_proj", E + ".layers.{i}.mlp.dense_4h_to_h"),
)
#: what the published repositories' ``auto_map`` names (their code loads what we save)
AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSequenceClassification": "modeling_chatglm.ChatGLMForSequenceClassification",
}


def _glm(hidden, ffn, layers, heads, groups, kv_channels, seq, vocab=65024, **kw):
    return {"hidden_size": hidden, "ffn_hidden_size": ffn, "num_layers": layers,
            "num_attention_heads": heads, "multi_query_attention": True,
            "multi_query_group_num": groups, "kv_channels": kv_channels, "seq_length": seq,
            "padded_vocab_size": vocab, "layernorm_epsilon": 1e-5, "rmsnorm": True,
            "add_bias_linear": False, "add_qkv_bias": True, "post_layer_norm": True,
            "eos_token_id": 2, "pad_token_id": 0, **kw}


class ChatGLM2Family(Family):
    name = "chatglm2"
    model_types = ("chatglm",)
    architecture = "ChatGLMModel"
    description = ("ChatGLM2/ChatGLM3: multi-query attention, fused qkv with bias, rotary on "
                   "half the head (interleaved pairs), fused SwiGLU")
    aliases = ("chatglm3",)
    alias_presets = {"chatglm3": "chatglm3-tiny"}
    default_preset = "chatglm2-tiny"
    rules = RULES
    ignore = (r".*rotary_pos_emb\.inv_freq$",)
    presets = {
        "chatglm2-tiny": _glm(64, 176, 2, 4, 2, 16, 2048),
        "chatglm3-tiny": _glm(64, 176, 2, 4, 2, 16, 8192),
        "chatglm2-6b": _glm(4096, 13696, 28, 32, 2, 128, 32768),
        "chatglm3-6b": _glm(4096, 13696, 28, 32, 2, 128, 8192),
    }

    #: transformers' usual names, accepted as overrides (``from_config("chatglm2", vocab_size=64)``)
    OVERRIDE_NAMES = {"vocab_size": "padded_vocab_size", "num_hidden_layers": "num_layers",
                      "intermediate_size": "ffn_hidden_size", "head_dim": "kv_channels",
                      "num_key_value_heads": "multi_query_group_num",
                      "max_position_embeddings": "seq_length", "rms_norm_eps": "layernorm_epsilon"}

    def config_for(self, name: str | None = None, **overrides: Any) -> ModelConfig:
        return super().config_for(name, **{self.OVERRIDE_NAMES.get(k, k): v
                                           for k, v in overrides.items()})

    def accepts_config(self, hf: Mapping[str, Any]) -> bool:
        """Whether ``hf`` (``model_type: chatglm``) is a ChatGLM2/ChatGLM3 config."""
        return any(k in hf for k in ("multi_query_attention", "padded_vocab_size"))

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        if hf.get("position_encoding_2d") or "inner_hidden_size" in hf:
            raise ValueError("this is a ChatGLM-6B (v1) config (2D rotary positions, GLM "
                             "mask): the chatglm family loads it, not chatglm2")
        for key, bad in (("apply_residual_connection_post_layernorm", True),
                         ("original_rope", False), ("fp32_residual_connection", True)):
            if hf.get(key, not bad) == bad:
                raise ValueError(f"chatglm checkpoints with {key}={bad} are not supported")
        if hf.get("quantization_bit"):
            raise ValueError(f"chatglm checkpoints quantized by THUDM's own scheme "
                             f"(quantization_bit={hf['quantization_bit']}) are not supported; load "
                             "the float checkpoint and use --quant_type weight_only_int8/int4")
        if hf.get("pre_seq_len"):
            raise ValueError("chatglm checkpoints with a P-tuning v2 prefix encoder (pre_seq_len) "
                             "are not supported; load the base model and use --peft prefix")
        hidden, heads = hf["hidden_size"], hf["num_attention_heads"]
        head_dim = hf.get("kv_channels") or hidden // heads
        groups = hf.get("multi_query_group_num", heads) if hf.get("multi_query_attention") else heads
        linear_bias = bool(hf.get("add_bias_linear", False))
        vocab = hf.get("padded_vocab_size") or hf["vocab_size"]
        return ModelConfig(
            family=self.name, vocab_size=vocab, hidden_size=hidden,
            num_layers=hf["num_layers"], num_heads=heads, num_kv_heads=groups, head_dim=head_dim,
            intermediate_size=hf["ffn_hidden_size"],
            max_position_embeddings=hf.get("seq_length", 2048),
            norm="rms" if hf.get("rmsnorm", True) else "layer",
            norm_eps=hf.get("layernorm_epsilon", 1e-5),
            final_norm=bool(hf.get("post_layer_norm", True)),
            activation="silu", gated_mlp=True, fused_gate_up=True,
            qkv_bias=linear_bias or bool(hf.get("add_qkv_bias", False)), fused_qkv="concat",
            out_bias=linear_bias, mlp_bias=linear_bias,
            position="rope", rope_theta=10000.0 * float(hf.get("rope_ratio", 1.0)),
            rotary_dim=head_dim // 2, rotary_interleaved=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            initializer_range=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {
            "architectures": [self.architecture], "model_type": "chatglm", "auto_map": AUTO_MAP,
            "num_layers": c.num_layers, "padded_vocab_size": c.vocab_size,
            "hidden_size": c.hidden_size, "ffn_hidden_size": c.intermediate_size,
            "kv_channels": c.head_dim, "num_attention_heads": c.num_heads,
            "seq_length": c.max_position_embeddings, "hidden_dropout": 0.0,
            "attention_dropout": 0.0, "layernorm_epsilon": c.norm_eps,
            "rmsnorm": c.norm == "rms", "apply_residual_connection_post_layernorm": False,
            "post_layer_norm": c.final_norm, "add_bias_linear": c.out_bias,
            "add_qkv_bias": c.qkv_bias, "bias_dropout_fusion": True,
            "multi_query_attention": True, "multi_query_group_num": c.num_kv_heads,
            "apply_query_key_layer_scaling": True, "attention_softmax_in_fp32": True,
            "fp32_residual_connection": False, "quantization_bit": 0, "pre_seq_len": None,
            "prefix_projection": False, "original_rope": True,
            "rope_ratio": c.rope_theta / 10000.0, "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.initializer_range, "bos_token_id": c.bos_token_id,
            "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
        }


family = ChatGLM2Family()
