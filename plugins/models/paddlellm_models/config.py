"""The one serialisable description of a decoder-only model (litgpt's ``Config`` in spirit).

Every family is expressed through these fields; the decoder never asks which family it
runs. Paddle-free: presets and ``llm models`` use it without importing Paddle.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

Norm = Literal["rms", "layer"]
Activation = Literal["silu", "gelu", "gelu_tanh", "relu"]
Position = Literal["rope", "learned", "alibi", "none"]
FusedQKV = Literal["concat", "heads"]


@dataclass
class ModelConfig:
    """Architecture of a decoder: sizes, blocks and the numerical conventions of a family."""

    family: str = "llama"  # registered family name; chooses the weight-name map on save
    vocab_size: int = 32000
    hidden_size: int = 4096
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int | None = None  # None: = num_heads (multi-head attention)
    head_dim: int | None = None  # None: hidden_size // num_heads
    intermediate_size: int = 11008
    max_position_embeddings: int = 4096

    # normalisation
    norm: Norm = "rms"
    norm_eps: float = 1e-6
    norm_unit_offset: bool = False  # Gemma: scale by (1 + w)
    pre_norm: bool = True  # False: OPT-350m style post-LN (norm after the residual add)
    final_norm: bool = True
    embedding_norm: bool = False  # Bloom's word_embeddings_layernorm
    sandwich_norm: bool = False  # Gemma 2: also normalise the attention and MLP outputs
    # GLM (ChatGLM-6B): the residual is the *normalised* input scaled by this factor,
    # ``h = norm(x); x = h * scale + block(h)`` (sqrt(2 * num_layers)); None: plain ``x + block``
    residual_post_norm_scale: float | None = None

    # blocks
    activation: Activation = "silu"
    gated_mlp: bool = True  # act(gate(x)) * up(x) -> down; else act(up(x)) -> down
    qkv_bias: bool = False
    # one q/k/v projection ``self_attn.qkv_proj`` instead of three: "concat" rows [q; k; v]
    # (GPT-2 c_attn, ChatGLM2 query_key_value, Baichuan W_pack), "heads" rows (H, 3, D)
    # per head (Bloom); None: separate q_proj/k_proj/v_proj
    fused_qkv: FusedQKV | None = None
    fused_gate_up: bool = False  # one ``mlp.gate_up_proj`` with rows [gate; up] (ChatGLM2)
    out_bias: bool = False  # attention output projection bias
    mlp_bias: bool = False
    parallel_residual: bool = False  # x + attn(norm1(x)) + mlp(norm2(x)) (GPT-J/NeoX)
    qk_norm: bool = False  # Qwen3: RMSNorm over head_dim on queries and keys before RoPE
    attention_scale: float | None = None  # None: head_dim ** -0.5
    attention_softcap: float | None = None  # Gemma 2: c * tanh(scores / c)
    final_logit_softcap: float | None = None  # Gemma 2: c * tanh(logits / c)
    sliding_window: int | None = None
    full_attention_layers: list[int] = field(default_factory=list)  # layers without the window

    # positions
    position: Position = "rope"
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None  # HF rope_parameters without rope_theta
    rotary_dim: int | None = None  # partial rotary (Phi): rotate the first dims only; None: all
    rotary_interleaved: bool = False  # rotate pairs (x0, x1), (x2, x3)... (GPT-J, ChatGLM2)
    learned_position_offset: int = 0  # OPT: 2
    # GLM's 2D positions (ChatGLM-6B): position ids ``(B, 2, T)``; the first half of each head
    # rotates by the position (frozen at the mask token once generation starts), the second
    # half by the block position (0 over the context, then 1, 2, ...); ``rotary_dim`` is the
    # width of one half
    position_encoding_2d: bool = False
    rope_inv_freq_fp16: bool = False  # ChatGLM-6B rounds its inverse frequencies to float16
    # GLM's prefix-LM mask: the keys before the first ``bos_token_id`` of a row (the context)
    # are visible to every query of the row (bidirectional); causal after it
    prefix_lm: bool = False
    # GLM: the mask tokens in order of precedence ([gMASK], [MASK]); the first one present
    # in a sequence is where positions freeze
    mask_token_ids: list[int] = field(default_factory=list)
    # embeddings / head
    tie_embeddings: bool = False
    embedding_multiplier: float = 1.0  # Gemma: sqrt(hidden_size)
    embed_proj_dim: int | None = None  # OPT: word embeddings of this width + project_in/out
    lm_head_norm: bool = False  # Baichuan2's NormHead: L2-normalise each vocab row of lm_head

    # mixture of experts (num_experts == 0: dense)
    num_experts: int = 0
    num_experts_per_tok: int = 2
    moe_intermediate_size: int | None = None
    norm_topk_prob: bool = True
    shared_expert_intermediate_size: int = 0  # Qwen2-MoE: a dense expert added to every token
    shared_expert_gate: bool = False  # sigmoid(gate(x)) scales the shared expert
    dense_layers: list[int] = field(default_factory=list)  # layers that stay dense in a MoE model

    # tokens (used by generation)
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        if self.num_kv_heads is None:
            self.num_kv_heads = self.num_heads
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_heads
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must be a multiple of "
                             f"num_kv_heads ({self.num_kv_heads})")
        if self.position not in ("rope", "learned", "alibi", "none"):
            raise ValueError(f"unknown position '{self.position}'")
        if self.norm not in ("rms", "layer"):
            raise ValueError(f"unknown norm '{self.norm}'")
        if self.fused_qkv not in (None, "concat", "heads"):
            raise ValueError(f"unknown fused_qkv '{self.fused_qkv}' (None, 'concat' or 'heads')")
        if self.fused_qkv == "heads" and self.num_kv_heads != self.num_heads:
            raise ValueError("fused_qkv='heads' (per-head q/k/v rows) needs num_kv_heads == num_heads")
        if self.rotary_interleaved and (self.rotary_dim or self.head_dim) % 2:
            raise ValueError("rotary_interleaved needs an even rotary dimension")
        if self.position_encoding_2d and (self.position != "rope" or self.rotary_interleaved
                                          or 2 * (self.rotary_dim or 0) != self.head_dim):
            raise ValueError("position_encoding_2d needs position='rope', rotary_dim = "
                             "head_dim / 2 and rotary_interleaved=False")
        if (self.prefix_lm or self.position_encoding_2d) and self.bos_token_id is None:
            raise ValueError("prefix_lm / position_encoding_2d need bos_token_id (where the "
                             "context ends)")

    # transformers' names, read-only, for code written against HF configs
    @property
    def num_hidden_layers(self) -> int:
        return self.num_layers

    @property
    def num_attention_heads(self) -> int:
        return self.num_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.num_kv_heads

    @property
    def tie_word_embeddings(self) -> bool:
        return self.tie_embeddings

    def is_moe_layer(self, index: int) -> bool:
        return self.num_experts > 0 and index not in self.dense_layers

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {', '.join(unknown)}; "
                             f"valid: {', '.join(sorted(names))}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def num_parameters(self) -> int:
        """Parameter count (for ``llm models``) without building the model."""
        h, d = self.hidden_size, self.head_dim
        attn = h * d * (self.num_heads * 2 + self.num_kv_heads * 2)
        n_up = 3 if self.gated_mlp else 2
        dense = n_up * h * self.intermediate_size
        moe = (self.num_experts * n_up * h * (self.moe_intermediate_size or self.intermediate_size)
               + self.num_experts * h + n_up * h * self.shared_expert_intermediate_size)
        layers = sum(attn + (moe if self.is_moe_layer(i) else dense) for i in range(self.num_layers))
        emb = self.vocab_size * (self.embed_proj_dim or h)
        head = 0 if self.tie_embeddings else emb
        pos = self.max_position_embeddings * h if self.position == "learned" else 0
        return layers + emb + head + pos
