"""The prefix encoder: ``P`` virtual tokens -> per-layer prefix keys and values.

Layout as peft's ``PrefixEncoder`` (``PREFIX_TUNING``): the flat prefix is
``(P, num_layers * 2 * kv_heads * head_dim)``; viewed as ``(P, num_layers * 2, Hkv, D)``,
row ``2 i`` holds layer ``i``'s keys and row ``2 i + 1`` its values. With
``prefix_projection`` (training only) the flat prefix is ``MLP(embedding)``, the paper's
reparameterisation: ``Linear(token_dim, hidden) -> tanh -> Linear(hidden, L * 2 * token_dim)``;
otherwise the flat prefix is the embedding itself. peft saves the flat prefix (after the MLP)
as ``prompt_embeddings``, so a saved adapter always loads without the MLP.
"""
from __future__ import annotations

import math

import paddle
import paddle.nn as nn


def _uniform(bound: float) -> paddle.ParamAttr:
    return paddle.ParamAttr(initializer=nn.initializer.Uniform(-bound, bound))


def _torch_like_linear(n_in: int, n_out: int) -> nn.Linear:
    """``nn.Linear`` initialised like torch's default (U(+-1/sqrt(in)) weight and bias)."""
    bound = 1.0 / math.sqrt(n_in)
    return nn.Linear(n_in, n_out, weight_attr=_uniform(bound), bias_attr=_uniform(bound))


class PrefixEncoder(nn.Layer):
    """Callable as ``encoder(batch)`` -> ``[(k, v)] * num_layers``, each ``(B, P, Hkv, D)``,
    or None while ``adapter_enabled`` is False (the decoder then runs as the base model)."""

    def __init__(self, num_tokens: int, num_layers: int, kv_heads: int, head_dim: int, *,
                 projection: bool = False, projection_hidden_size: int | None = None) -> None:
        super().__init__()
        self.num_tokens, self.num_layers = num_tokens, num_layers
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.token_dim = kv_heads * head_dim
        self.projection = projection
        self.adapter_enabled = True
        flat = num_layers * 2 * self.token_dim
        normal = paddle.ParamAttr(initializer=nn.initializer.Normal(0.0, 1.0))
        if projection:
            self.hidden_size = projection_hidden_size or self.token_dim
            self.embedding = nn.Embedding(num_tokens, self.token_dim, weight_attr=normal)
            self.transform = nn.Sequential(_torch_like_linear(self.token_dim, self.hidden_size),
                                           nn.Tanh(),
                                           _torch_like_linear(self.hidden_size, flat))
        else:
            self.hidden_size = None
            self.embedding = nn.Embedding(num_tokens, flat, weight_attr=normal)

    def prompt_embeddings(self) -> paddle.Tensor:
        """The flat prefix ``(P, L * 2 * Hkv * D)`` (what peft saves)."""
        table = self.embedding.weight  # (P, token_dim) or (P, flat)
        return self.transform(table) if self.projection else table

    def forward(self, batch: int):
        if not self.adapter_enabled:
            return None
        flat = self.prompt_embeddings()
        kv = flat.reshape([1, self.num_tokens, self.num_layers * 2, self.kv_heads, self.head_dim])
        kv = kv.expand([batch, *kv.shape[1:]])  # (B, P, 2L, Hkv, D)
        return [(kv[:, :, 2 * i], kv[:, :, 2 * i + 1]) for i in range(self.num_layers)]

    def load_prompt_embeddings(self, table) -> None:
        """Set the flat prefix (from a saved adapter); only without the projection MLP."""
        if self.projection:
            raise ValueError("a saved prefix (prompt_embeddings) loads only into an encoder "
                             "without prefix_projection")
        expected = [self.num_tokens, self.num_layers * 2 * self.token_dim]
        if list(table.shape) != expected:
            raise ValueError(f"prompt_embeddings has shape {list(table.shape)}, this model "
                             f"needs {expected} (num_prefix_tokens, num_layers * 2 * kv_heads "
                             "* head_dim)")
        self.embedding.weight.set_value(paddle.to_tensor(table, dtype=self.embedding.weight.dtype))

    def extra_repr(self) -> str:
        return (f"num_tokens={self.num_tokens}, num_layers={self.num_layers}, "
                f"kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"projection={self.projection}")
