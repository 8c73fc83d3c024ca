"""LoReFT interventions (Wu et al., 2024, "ReFT: Representation Finetuning for Language
Models"; ``pyreft``'s ``LoreftIntervention``, PaddleNLP's ``reft``).

A decoder layer's output hidden state ``h (H,)`` at a chosen prompt position becomes::

    h + R^T (W h + b - R h)

with ``R (r, H)`` having orthonormal rows and ``W (r, H)``, ``b (r,)`` a linear map: the
component of ``h`` in the row space of ``R`` is replaced by ``W h + b``; the rest of ``h`` is
untouched. ``R`` is parametrised by a free matrix ``A (r, H)`` through a QR decomposition
(``R = Q^T`` of ``A^T = Q U`` with ``diag(U) > 0``), so ``R = A`` whenever ``A`` already has
orthonormal rows: a saved ``R`` loads exactly.

Positions (pyreft's ``f7+l7``): the first ``p`` and last ``s`` tokens of each row's prompt
(their union, each edited once). The prompt is the real (unpadded) tokens of the input,
except in a training batch seen through :func:`paddlellm.modeling.peft.batch_context`, where it ends
at the first token with a label (a row without ignored labels is all prompt). With a KV
cache only the first (prefill) call is edited; generated tokens are not.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import paddle
import paddle.nn as nn

from ..common import AdapterError

LEAVES = ("rotate_layer", "learned_source.weight", "learned_source.bias")
_POSITIONS = re.compile(r"^(?:f(\d+))?(?:\+?l(\d+))?$")


def parse_positions(text: str) -> tuple[int, int]:
    """``"f7+l7"`` -> ``(7, 7)``; ``"l1"`` -> ``(0, 1)``; ``"f3"`` -> ``(3, 0)``."""
    m = _POSITIONS.match(str(text).strip().replace(" ", ""))
    if not m or not (m.group(1) or m.group(2)) or (m.group(1) and m.group(2) and "+" not in text):
        raise ValueError(f"reft_positions {text!r}: expected 'f<p>', 'l<s>' or 'f<p>+l<s>' "
                         "(e.g. 'f7+l7')")
    first, last = int(m.group(1) or 0), int(m.group(2) or 0)
    if first + last == 0:
        raise ValueError(f"reft_positions {text!r} selects no position")
    return first, last


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``"all"``, ``"every_other"`` or ``"0;2;5"`` / ``"0,2,5"`` -> sorted layer indices."""
    value = str(text).strip().lower()
    if value == "all":
        return list(range(num_layers))
    if value in ("every_other", "every-other"):
        return list(range(0, num_layers, 2))
    try:
        layers = sorted({int(p) for p in re.split(r"[;,\s]+", value) if p})
    except ValueError:
        raise ValueError(f"reft_layers {text!r}: expected 'all', 'every_other' or layer indices "
                         "like '0;2;5'") from None
    bad = [i for i in layers if not 0 <= i < num_layers]
    if not layers or bad:
        raise ValueError(f"reft_layers {text!r}: the model has layers 0..{num_layers - 1}")
    return layers


def orthonormal_rows(a: paddle.Tensor) -> paddle.Tensor:
    """``(r, H)`` -> ``(r, H)`` with orthonormal rows spanning those of ``a`` (QR, signs fixed
    so that rows already orthonormal come back unchanged)."""
    q, u = paddle.linalg.qr(a.T)  # (H, r), (r, r)
    sign = paddle.sign(paddle.diagonal(u))
    sign = paddle.where(sign == 0, paddle.ones_like(sign), sign)
    return (q * sign.unsqueeze(0)).T


class PromptPositions:
    """The batch context of a training step: each row's prompt length in real tokens."""

    def __init__(self) -> None:
        self.prompt_lengths: paddle.Tensor | None = None  # (B,) int64


def position_mask(mask: paddle.Tensor | None, batch: int, length: int, first: int, last: int,
                  prompt_lengths: paddle.Tensor | None) -> paddle.Tensor:
    """``(B, T, 1)`` float mask of the positions to edit (this call's ``T`` tokens, no past)."""
    if mask is None:
        real = paddle.ones([batch, length], dtype="int64")
    else:
        real = mask[:, -length:].astype("int64")
    index = paddle.cumsum(real, axis=-1) - 1  # rank of each real token in its row
    total = real.sum(axis=-1, keepdim=True)  # (B, 1)
    if prompt_lengths is not None:
        plen = prompt_lengths.astype("int64").reshape([-1, 1])
        plen = paddle.where(plen > 0, paddle.minimum(plen, total), total)
    else:
        plen = total
    chosen = (index < first) | ((index >= plen - last) & (index < plen))
    chosen = chosen & (real > 0) & (index < plen)
    return chosen.astype("float32").unsqueeze(-1)


class LoreftIntervention(nn.Layer):
    """``h -> h + R^T (W h + b - R h)`` (``adapter_enabled`` switches it off)."""

    def __init__(self, hidden: int, rank: int, *, dropout: float = 0.0, seed: int = 0,
                 dtype: str = "float32") -> None:
        super().__init__()
        if rank > hidden:
            raise ValueError(f"reft_rank {rank} is larger than the hidden size {hidden}")
        self.hidden, self.rank = int(hidden), int(rank)
        rng = np.random.default_rng(seed)
        # R: orthonormal rows (a random orthogonal init, as torch's orthogonal_ does);
        # W, b: torch's default Linear init U(+-1/sqrt(H))
        q, u = np.linalg.qr(rng.normal(size=(hidden, rank)))
        q = q * np.sign(np.diag(u))
        bound = 1.0 / math.sqrt(hidden)
        self.rotate_layer = self.create_parameter(
            [rank, hidden], dtype=dtype,
            default_initializer=nn.initializer.Assign(q.T.astype(np.float32)))
        self.learned_source_weight = self.create_parameter(
            [rank, hidden], dtype=dtype, default_initializer=nn.initializer.Assign(
                rng.uniform(-bound, bound, (rank, hidden)).astype(np.float32)))
        self.learned_source_bias = self.create_parameter(
            [rank], dtype=dtype, default_initializer=nn.initializer.Assign(
                rng.uniform(-bound, bound, (rank,)).astype(np.float32)))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.reft_dropout = float(dropout)

    def rotation(self) -> paddle.Tensor:
        """``R (r, H)`` with orthonormal rows."""
        return orthonormal_rows(self.rotate_layer.astype("float32"))  # QR in float32

    def edit(self, h: paddle.Tensor) -> paddle.Tensor:
        """``R^T (W h + b - R h)`` for ``h (..., H)``."""
        R = self.rotation().astype(h.dtype)
        source = paddle.matmul(h, self.learned_source_weight.astype(h.dtype), transpose_y=True)
        source = source + self.learned_source_bias.astype(h.dtype)
        delta = paddle.matmul(source - paddle.matmul(h, R, transpose_y=True), R)  # (..., H)
        return self.dropout(delta) if self.dropout is not None else delta


class ReftLayer(nn.Layer):
    """A decoder layer whose output is edited by a :class:`LoreftIntervention` at the chosen
    prompt positions."""

    def __init__(self, base: nn.Layer, intervention: LoreftIntervention, *, first: int,
                 last: int, context: PromptPositions) -> None:
        super().__init__()
        self.base_layer = base
        self.intervention = intervention
        self.first, self.last = int(first), int(last)
        self.context = context  # shared by every ReftLayer of the model
        self.adapter_enabled = True

    def forward(self, x: paddle.Tensor, ctx: dict[str, Any], cache=None) -> paddle.Tensor:
        if getattr(cache, "paged", False):
            raise AdapterError("ReFT interventions are not supported with the paged KV cache "
                             "(the serving engine); they cannot be merged either — serve "
                             "with another PEFT method or use llm predict")
        if ctx.get("segments") is not None:
            raise AdapterError("ReFT cannot be combined with packed sequences (segment_ids, "
                             "--zero_padding): its positions are per prompt")
        decoding = cache is not None and len(cache) > 0  # past the prompt: no edit
        h = self.base_layer(x, ctx, cache)  # (B, T, H)
        if not self.adapter_enabled or decoding:
            return h
        b, t = h.shape[0], h.shape[1]
        where = position_mask(ctx.get("mask"), b, t, self.first, self.last,
                              self.context.prompt_lengths).astype(h.dtype)
        return h + where * self.intervention.edit(h)

    def extra_repr(self) -> str:
        return (f"rank={self.intervention.rank}, positions=f{self.first}+l{self.last}")
