"""ChatGLM-6B (v1, THUDM's ``modeling_chatglm.py`` for ``THUDM/chatglm-6b``, ``model_type: chatglm``).

GLM blocks on the configurable decoder: LayerNorm with bias, one fused ``query_key_value``
interleaved per head (rows ``(H, 3, D)``: ``fused_qkv="heads"``), biases on every linear, a
plain GELU MLP (the tanh formula), a word-embedding-tied head, and what is GLM's own:

* 2D rotary positions (``position_encoding_2d``): the first half of each head rotates by the
  position, the second half by the block position (:func:`~paddlellm_models.decoder.glm_positions`);
  THUDM's inverse frequencies are float16 values (``rope_inv_freq_fp16``);
* the prefix-LM mask (``prefix_lm``): the context before the first bos (``<sop>``) is seen
  bidirectionally, causal after it;
* the residual of the *normalised* input scaled by ``alpha = sqrt(2 * num_layers)``
  (``residual_post_norm_scale``).

ChatGLM2/ChatGLM3 share ``model_type: chatglm``; :meth:`ChatGLMFamily.accepts_config` tells
them apart by their config keys (v1: ``position_encoding_2d``/``inner_hidden_size``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from ..config import ModelConfig
from .base import Family

L = "transformer.layers.{i}"
RULES = (
    ("model.embed_tokens", "transformer.word_embeddings"),
    ("model.norm", "transformer.final_layernorm"),
    ("lm_head", "lm_head"),
    ("model.layers.{i}.input_layernorm", L + ".input_layernorm"),
    ("model.layers.{i}.post_attention_layernorm", L + ".post_attention_layernorm"),
    ("model.layers.{i}.self_attn.qkv_proj", L + ".attention.query_key_value"),
    ("model.layers.{i}.self_attn.o_proj", L + ".attention.dense"),
    ("model.layers.{i}.mlp.up_proj", L + ".mlp.dense_h_to_4h"),
    ("model.layers.{i}.mlp.down_proj", L + ".mlp.dense_4h_to_h"),
)
#: what THUDM/chatglm-6b's ``auto_map`` names (its code loads what we save)
AUTO_MAP = {
    "AutoConfig": "configuration_chatglm.ChatGLMConfig",
    "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
    "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
}
#: ChatGLM-6B's special tokens (ice_text.model + 20000 image tokens): [MASK], [gMASK], <sop>, <eop>
IDS_6B = {"mask_token_id": 130000, "gmask_token_id": 130001, "bos_token_id": 130004,
          "eos_token_id": 130005, "pad_token_id": 3}
#: config keys only ChatGLM-6B (v1) writes / only ChatGLM2/3 write
V1_KEYS = ("position_encoding_2d", "inner_hidden_size")
V2_KEYS = ("multi_query_attention", "padded_vocab_size")


def _glm(hidden, inner, layers, heads, vocab, seq=2048, **kw):
    return {"architectures": ["ChatGLMModel"], "hidden_size": hidden,
            "inner_hidden_size": inner, "num_layers": layers, "num_attention_heads": heads,
            "vocab_size": vocab, "max_sequence_length": seq, "layernorm_epsilon": 1e-5,
            "position_encoding_2d": True, **IDS_6B, **kw}


class ChatGLMFamily(Family):
    name = "chatglm"
    model_types = ("chatglm",)
    architecture = "ChatGLMModel"
    description = ("ChatGLM-6B (GLM): 2D rotary positions, bidirectional context (prefix-LM "
                   "mask), residuals of the normalised input scaled by sqrt(2 layers), per-head "
                   "fused qkv")
    aliases = ("chatglm1",)
    default_preset = "chatglm-tiny"
    rules = RULES
    ignore = (r".*rotary_emb\.inv_freq$",)
    presets = {
        # the full 130528-id vocabulary keeps the published special-token ids
        "chatglm-tiny": _glm(64, 256, 2, 4, 130528),
        "chatglm-6b": _glm(4096, 16384, 28, 32, 130528),
    }

    #: transformers' usual names, accepted as overrides (``--model chatglm`` on the demo data)
    OVERRIDE_NAMES = {"num_hidden_layers": "num_layers", "intermediate_size": "inner_hidden_size",
                      "max_position_embeddings": "max_sequence_length",
                      "rms_norm_eps": "layernorm_epsilon"}
    #: overrides that do not apply (v1 has one kv head per query head)
    DROPPED = ("num_key_value_heads",)

    def accepts_config(self, hf: Mapping[str, Any]) -> bool:
        """Whether ``hf`` (``model_type: chatglm``) is a ChatGLM-6B (v1) config."""
        return any(k in hf for k in V1_KEYS) and not any(k in hf for k in V2_KEYS)

    def config_for(self, name: str | None = None, **overrides: Any) -> ModelConfig:
        return super().config_for(name, **{self.OVERRIDE_NAMES.get(k, k): v
                                           for k, v in overrides.items()
                                           if k not in self.DROPPED})

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        if any(k in hf for k in V2_KEYS):
            raise ValueError("this is a ChatGLM2/ChatGLM3 config (multi_query_attention / "
                             "padded_vocab_size); the chatglm2 family loads it")
        if not hf.get("position_encoding_2d", True):
            raise ValueError("ChatGLM-6B checkpoints with position_encoding_2d=false (1D GLM "
                             "positions) are not supported")
        if hf.get("quantization_bit"):
            raise ValueError(f"chatglm checkpoints quantized by THUDM's own scheme "
                             f"(quantization_bit={hf['quantization_bit']}) are not supported; load "
                             "the float checkpoint and use --quant_type weight_only_int8/int4")
        if hf.get("pre_seq_len"):
            raise ValueError("chatglm checkpoints with a P-tuning v2 prefix encoder (pre_seq_len) "
                             "are not supported; load the base model and use --peft prefix")
        hidden, heads, layers = hf["hidden_size"], hf["num_attention_heads"], hf["num_layers"]
        if hidden % (2 * heads) or (hidden // heads) % 4:
            raise ValueError(f"chatglm: head size hidden_size / num_attention_heads = "
                             f"{hidden}/{heads} must be a multiple of 4 (2D rotary halves)")
        head_dim = hidden // heads
        masks = [hf[k] for k in ("gmask_token_id", "mask_token_id") if hf.get(k) is not None]
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=hidden,
            num_layers=layers, num_heads=heads, head_dim=head_dim,
            intermediate_size=hf.get("inner_hidden_size") or 4 * hidden,
            max_position_embeddings=hf.get("max_sequence_length", 2048),
            norm="layer", norm_eps=hf.get("layernorm_epsilon", 1e-5), final_norm=True,
            activation="gelu_tanh", gated_mlp=False, qkv_bias=True, fused_qkv="heads",
            out_bias=True, mlp_bias=True, position="rope", rope_theta=10000.0,
            rotary_dim=head_dim // 2, position_encoding_2d=True, rope_inv_freq_fp16=True,
            prefix_lm=True, mask_token_ids=masks,
            residual_post_norm_scale=math.sqrt(2 * layers),
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            initializer_range=hf.get("initializer_range", 0.02),
            bos_token_id=hf.get("bos_token_id", IDS_6B["bos_token_id"]),
            eos_token_id=hf.get("eos_token_id", IDS_6B["eos_token_id"]),
            pad_token_id=hf.get("pad_token_id", IDS_6B["pad_token_id"]))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        masks = dict(zip(("gmask_token_id", "mask_token_id"), c.mask_token_ids))
        return {
            "architectures": [self.architecture], "model_type": "chatglm", "auto_map": AUTO_MAP,
            "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
            "inner_hidden_size": c.intermediate_size, "num_layers": c.num_layers,
            "num_attention_heads": c.num_heads, "max_sequence_length": c.max_position_embeddings,
            "layernorm_epsilon": c.norm_eps, "position_encoding_2d": True, "use_cache": True,
            "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.initializer_range,
            "quantization_bit": 0, "pre_seq_len": None, "prefix_projection": False,
            "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id,
            "pad_token_id": c.pad_token_id, **masks,
        }


family = ChatGLMFamily()
