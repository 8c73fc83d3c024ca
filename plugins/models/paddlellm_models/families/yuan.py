"""Yuan 2.0 (IEIT-Yuan's ``yuan_hf_model.py``, ``model_type: yuan``).

LLaMA-shaped blocks with Localized Filtering-based Attention (LFA): before the query and
key projections, each layer's input passes two causal convolutions of kernel 2 over the
sequence (``lf_gate.conv1``: hidden -> hidden/2, ``lf_gate.conv2``: hidden/2 -> hidden), a
residual and an RMSNorm (``lf_gate.output_layernorm``, eps 1e-6); values are projected
from the unfiltered input. Yuan's further quirks, kept as published: the query/key heads
are cut from the concatenation ``[q_proj(x'); k_proj(x')]`` viewed as ``(heads, 2 * D)``
(head ``h`` takes the first ``D`` columns of row ``h`` as query and the rest as key), and
the MLP applies the activation to ``up_proj`` (``down(gate(x) * silu(up(x)))``) — so our
gated MLP's ``gate_proj`` is Yuan's ``up_proj`` and the other way round.

During decoding the convolutions need the layer inputs of the two previous positions: the
``yuan_lfa`` KV-cache layout (:mod:`paddlellm_models.lfa`) keeps them beside the keys and
values, per position (contiguous cache) or per block slot (the engine's paged pool).
Weights load and save under the published names; the blocks are built by
:mod:`paddlellm_models.lfa` (Paddle is imported on first use only).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import eos_from_hf, tokens_to_hf
from .llama import ACT_TO_HF, LLAMA_RULES, LlamaLikeFamily, activation_from_hf

LF = "model.layers.{i}.self_attn.lf_gate"
#: ours <-> published; the MLP's gate/up are swapped (Yuan activates up_proj)
RULES = tuple(r for r in LLAMA_RULES if ".mlp.gate_proj" not in r[0] and ".mlp.up_proj" not in r[0]) + (
    ("model.layers.{i}.mlp.gate_proj", "model.layers.{i}.mlp.up_proj"),
    ("model.layers.{i}.mlp.up_proj", "model.layers.{i}.mlp.gate_proj"),
    (LF + ".conv1", LF + ".conv1"),
    (LF + ".conv2", LF + ".conv2"),
    (LF + ".output_layernorm", LF + ".output_layernorm"),
)
#: what the published repositories' ``auto_map`` names (their code loads what we save)
AUTO_MAP = {"AutoConfig": "configuration_yuan.YuanConfig",
            "AutoModelForCausalLM": "yuan_hf_model.YuanForCausalLM"}
#: Yuan's special tokens: <eod> ends a document/answer, <sep> ends the user's turn
EOD_TOKEN_ID, SEP_TOKEN_ID = 77185, 77187


def _yuan(hidden, inter, layers, heads, vocab=135040, ctx=8192, **kw):
    return {"architectures": ["YuanForCausalLM"], "hidden_size": hidden,
            "intermediate_size": inter, "num_hidden_layers": layers,
            "num_attention_heads": heads, "vocab_size": vocab, "max_position_embeddings": ctx,
            "rms_norm_eps": 1e-6, "hidden_act": "silu", "tie_word_embeddings": True,
            "use_lfa": True, "use_flash_attention": False, "causal_mask": True,
            "reset_attention_mask": True, "reset_position_ids": True, "use_loss_mask": False,
            "eod_token": EOD_TOKEN_ID, "sep_token": SEP_TOKEN_ID,
            "bos_token_id": EOD_TOKEN_ID, "eos_token_id": EOD_TOKEN_ID,
            "pad_token_id": EOD_TOKEN_ID, **kw}


class YuanFamily(LlamaLikeFamily):
    name = "yuan"
    model_types = ("yuan",)
    architecture = "YuanForCausalLM"
    description = ("Yuan 2.0: Localized Filtering-based Attention (causal conv filters on "
                   "q/k, their state cached per sequence), SwiGLU on up_proj, tied embeddings")
    aliases = ("yuan2",)
    default_preset = "yuan-tiny"
    rules = RULES
    presets = {
        # ids of the tiny preset fit its vocabulary (the demo tokenizer's eos is 2)
        "yuan-tiny": _yuan(64, 176, 2, 4, vocab=32000, ctx=2048, eod_token=2, sep_token=3,
                           bos_token_id=1, eos_token_id=2, pad_token_id=0),
        "yuan2-2b": _yuan(2048, 8192, 24, 32),
    }

    def config_for(self, name: str | None = None, **overrides: Any) -> ModelConfig:
        """A preset with ``overrides``; a generic size request's ``num_key_value_heads`` (the
        demo size asks for grouped heads) is dropped: Yuan 2.0 attention is multi-head."""
        overrides.pop("num_key_value_heads", None)
        return super().config_for(name, **overrides)

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        if hf.get("use_shareqk"):
            raise ValueError("yuan checkpoints with use_shareqk=true (shared q/k projection "
                             "instead of localized filtering) are not supported")
        if hf.get("use_lfa") is False:
            raise ValueError("yuan checkpoints with use_lfa=false are not supported (Yuan 2.0 "
                             "attention is the localized filtering one)")
        if hf.get("num_experts") or hf.get("moe_config"):
            raise ValueError("Yuan2.0-M32 (mixture of experts with an attention router) is "
                             "not supported; Yuan 2.0 dense checkpoints are")
        heads = hf["num_attention_heads"]
        if hf["hidden_size"] % heads:
            raise ValueError(f"yuan: hidden_size {hf['hidden_size']} must be a multiple of "
                             f"num_attention_heads {heads}")
        kv = hf.get("num_key_value_heads")
        if kv not in (None, heads):
            raise ValueError(f"yuan: num_key_value_heads ({kv}) must equal num_attention_heads "
                             f"({heads}); Yuan 2.0 has no grouped-query attention")
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
            num_layers=hf["num_hidden_layers"], num_heads=heads,
            intermediate_size=hf["intermediate_size"],
            max_position_embeddings=hf.get("max_position_embeddings") or hf.get("model_max_length", 8192),
            norm="rms", norm_eps=hf.get("rms_norm_eps", 1e-6), activation=activation_from_hf(hf),
            gated_mlp=True, position="rope", rope_theta=10000.0,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            initializer_range=hf.get("initializer_range", 0.02), **eos_from_hf(hf))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        eos = c.eos_token_id[0] if isinstance(c.eos_token_id, list) else c.eos_token_id
        return {"architectures": [self.architecture], "model_type": "yuan", "auto_map": AUTO_MAP,
                "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
                "num_attention_heads": c.num_heads, "hidden_act": ACT_TO_HF[c.activation],
                "max_position_embeddings": c.max_position_embeddings,
                "model_max_length": c.max_position_embeddings, "rms_norm_eps": c.norm_eps,
                "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.initializer_range,
                "use_lfa": True, "use_shareqk": False, "use_flash_attention": False,
                "causal_mask": True, "reset_attention_mask": False, "reset_position_ids": False,
                "use_loss_mask": False, "dropout": 0.0,
                # the published model reads both; sep_token only shapes its loss mask
                # (use_loss_mask, off): the published id, or <eod>'s in other vocabularies
                "eod_token": eos, "sep_token": SEP_TOKEN_ID if c.vocab_size == 135040 else eos,
                **tokens_to_hf(c)}

    def num_parameters(self, config: ModelConfig) -> int:
        """The decoder's count plus each layer's filter: conv1 ``(H/2, H, 2)`` + bias, conv2
        ``(H, H/2, 2)`` + bias, and the RMSNorm."""
        h = config.hidden_size
        lf = 2 * (h // 2) * h * 2 + h // 2 + h + h
        return config.num_parameters() + config.num_layers * lf

    def build(self, config: ModelConfig, dtype: str = "float32", init: bool = True):
        """The configurable decoder with Yuan's attention block in every layer and the
        ``yuan_lfa`` KV-cache layout (filter state beside the keys and values)."""
        from paddlellm.api import canonical_dtype

        from ..decoder import build_context
        from ..lfa import build_yuan

        dtype = canonical_dtype(dtype)
        if dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"models are built in float32, bfloat16 or float16, not '{dtype}'")
        with build_context(dtype, init=init, std=config.initializer_range):
            return build_yuan(config, self)


family = YuanFamily()
