"""OPT: learned positions with an offset of 2, LayerNorm (pre or post), ReLU, project_in/out."""
from __future__ import annotations

from typing import Any, Mapping

from ..config import ModelConfig
from .base import Family, eos_from_hf, tokens_to_hf
from .llama import ACT_FROM_HF

P = "model.decoder"
RULES = (
    ("model.embed_tokens", f"{P}.embed_tokens"),
    ("model.embed_positions", f"{P}.embed_positions"),
    ("model.norm", f"{P}.final_layer_norm"),
    ("model.project_in", f"{P}.project_in"),
    ("model.project_out", f"{P}.project_out"),
    ("model.layers.{i}.input_layernorm", P + ".layers.{i}.self_attn_layer_norm"),
    ("model.layers.{i}.post_attention_layernorm", P + ".layers.{i}.final_layer_norm"),
    ("model.layers.{i}.self_attn.q_proj", P + ".layers.{i}.self_attn.q_proj"),
    ("model.layers.{i}.self_attn.k_proj", P + ".layers.{i}.self_attn.k_proj"),
    ("model.layers.{i}.self_attn.v_proj", P + ".layers.{i}.self_attn.v_proj"),
    ("model.layers.{i}.self_attn.o_proj", P + ".layers.{i}.self_attn.out_proj"),
    ("model.layers.{i}.mlp.up_proj", P + ".layers.{i}.fc1"),
    ("model.layers.{i}.mlp.down_proj", P + ".layers.{i}.fc2"),
    ("lm_head", "lm_head"),
)


def _opt(hidden, layers, heads, ffn, proj=None, pre=True, ctx=2048, vocab=50272):
    return {"hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "ffn_dim": ffn, "word_embed_proj_dim": proj or hidden, "do_layer_norm_before": pre,
            "max_position_embeddings": ctx, "vocab_size": vocab}


class OPTFamily(Family):
    name = "opt"
    model_types = ("opt",)
    architecture = "OPTForCausalLM"
    description = "OPT: learned positions (offset 2), LayerNorm, ReLU, optional project_in/out"
    default_preset = "opt-tiny"
    rules = RULES
    presets = {
        "opt-tiny": _opt(64, 2, 4, 256),
        "opt-125m": _opt(768, 12, 12, 3072), "opt-350m": _opt(1024, 24, 16, 4096, 512, False),
        "opt-1.3b": _opt(2048, 24, 32, 8192), "opt-2.7b": _opt(2560, 32, 32, 10240),
        "opt-6.7b": _opt(4096, 32, 32, 16384), "opt-13b": _opt(5120, 40, 40, 20480),
    }

    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        if hf.get("layer_norm_elementwise_affine", True) is False:
            raise ValueError("OPT checkpoints without LayerNorm affine weights are not supported")
        hidden, pre = hf["hidden_size"], hf.get("do_layer_norm_before", True)
        proj = hf.get("word_embed_proj_dim") or hidden
        bias = hf.get("enable_bias", True)
        return ModelConfig(
            family=self.name, vocab_size=hf["vocab_size"], hidden_size=hidden,
            num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
            intermediate_size=hf["ffn_dim"], max_position_embeddings=hf.get("max_position_embeddings", 2048),
            norm="layer", norm_eps=1e-5, pre_norm=pre,
            final_norm=pre and not hf.get("_remove_final_layer_norm", False),
            activation=ACT_FROM_HF[hf.get("activation_function", "relu")], gated_mlp=False,
            qkv_bias=bias, out_bias=bias, mlp_bias=bias, position="learned",
            learned_position_offset=2, embed_proj_dim=proj if proj != hidden else None,
            tie_embeddings=hf.get("tie_word_embeddings", True),
            initializer_range=hf.get("init_std", 0.02), **eos_from_hf(hf))

    def config_to_hf(self, c: ModelConfig) -> dict[str, Any]:
        return {"architectures": [self.architecture], "model_type": "opt",
                "vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
                "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
                "ffn_dim": c.intermediate_size, "max_position_embeddings": c.max_position_embeddings,
                "word_embed_proj_dim": c.embed_proj_dim or c.hidden_size,
                "do_layer_norm_before": c.pre_norm,
                "_remove_final_layer_norm": c.pre_norm and not c.final_norm,
                "activation_function": c.activation, "enable_bias": c.qkv_bias,
                "tie_word_embeddings": c.tie_embeddings, "init_std": c.initializer_range,
                **tokens_to_hf(c)}

    def from_hf_tensor(self, hf_name, array, config):
        if hf_name.startswith("decoder."):  # checkpoints saved from OPTModel
            hf_name = "model." + hf_name
        return super().from_hf_tensor(hf_name, array, config)


family = OPTFamily()
