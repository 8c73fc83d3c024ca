"""What GGUF calls things: architectures, tensor names, hyper-parameter keys and the Q/K row
order of llama.cpp's ``llama`` architecture.

A GGUF ``general.architecture`` maps to a Hugging Face ``model_type`` (and back) here; the
tensor names follow llama.cpp's ``gguf-py/gguf/constants.py`` (``token_embd``, ``blk.N.attn_q``,
...). Only the LLaMA-shaped decoders are covered: ``llama`` (LLaMA 1/2/3, Mistral, and every
model llama.cpp's converter writes as ``llama``), ``qwen2`` and ``qwen3``.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import numpy as np

from paddlellm.api import CheckpointFormatError


class GGUFError(CheckpointFormatError):
    """A GGUF file (or a checkpoint to be written as one) that we cannot convert: the message
    names the file and the field, tensor or type at fault."""


#: GGUF architecture -> (HF model_type, HF architecture class, Q/K rows permuted by llama.cpp)
ARCHES: dict[str, tuple[str, str, bool]] = {
    "llama": ("llama", "LlamaForCausalLM", True),
    "qwen2": ("qwen2", "Qwen2ForCausalLM", False),
    "qwen3": ("qwen3", "Qwen3ForCausalLM", False),
}
#: HF model_type -> GGUF architecture (Mistral is written as ``llama``, as llama.cpp does)
MODEL_TYPES: dict[str, str] = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}

#: HF tensor name (``{i}`` = layer) -> GGUF tensor name
_NAMES = (
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("model.layers.{i}.input_layernorm.weight", "blk.{i}.attn_norm.weight"),
    ("model.layers.{i}.post_attention_layernorm.weight", "blk.{i}.ffn_norm.weight"),
    ("model.layers.{i}.self_attn.q_proj.weight", "blk.{i}.attn_q.weight"),
    ("model.layers.{i}.self_attn.k_proj.weight", "blk.{i}.attn_k.weight"),
    ("model.layers.{i}.self_attn.v_proj.weight", "blk.{i}.attn_v.weight"),
    ("model.layers.{i}.self_attn.o_proj.weight", "blk.{i}.attn_output.weight"),
    ("model.layers.{i}.self_attn.q_proj.bias", "blk.{i}.attn_q.bias"),
    ("model.layers.{i}.self_attn.k_proj.bias", "blk.{i}.attn_k.bias"),
    ("model.layers.{i}.self_attn.v_proj.bias", "blk.{i}.attn_v.bias"),
    ("model.layers.{i}.self_attn.o_proj.bias", "blk.{i}.attn_output.bias"),
    ("model.layers.{i}.self_attn.q_norm.weight", "blk.{i}.attn_q_norm.weight"),
    ("model.layers.{i}.self_attn.k_norm.weight", "blk.{i}.attn_k_norm.weight"),
    ("model.layers.{i}.mlp.gate_proj.weight", "blk.{i}.ffn_gate.weight"),
    ("model.layers.{i}.mlp.up_proj.weight", "blk.{i}.ffn_up.weight"),
    ("model.layers.{i}.mlp.down_proj.weight", "blk.{i}.ffn_down.weight"),
    ("model.layers.{i}.mlp.gate_proj.bias", "blk.{i}.ffn_gate.bias"),
    ("model.layers.{i}.mlp.up_proj.bias", "blk.{i}.ffn_up.bias"),
    ("model.layers.{i}.mlp.down_proj.bias", "blk.{i}.ffn_down.bias"),
)


def _compile(pairs, reverse: bool):
    out = []
    for hf, gg in pairs:
        src, dst = (gg, hf) if reverse else (hf, gg)
        pattern = re.compile("^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + "$")
        out.append((pattern, dst))
    return out


_TO_GGUF = _compile(_NAMES, reverse=False)
_TO_HF = _compile(_NAMES, reverse=True)


def _rename(name: str, rules) -> str | None:
    for pattern, dst in rules:
        m = pattern.match(name)
        if m:
            return dst.format(i=m.group(1)) if m.groups() else dst
    return None


def gguf_name(hf_name: str) -> str | None:
    """The GGUF name of an HF tensor name, or None when the layout has no such tensor."""
    return _rename(hf_name, _TO_GGUF)


def hf_name(gguf_tensor: str) -> str | None:
    """The HF name of a GGUF tensor name, or None when the name is not one we map."""
    return _rename(gguf_tensor, _TO_HF)


def permute_qk(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF -> llama.cpp row order of a Q or K projection (weight or bias) of ``n_head`` heads.

    HF's rotary embedding pairs dimension ``j`` with ``j + head_dim/2`` (rotate-half);
    llama.cpp's ``llama`` architecture pairs ``2j`` with ``2j + 1``, so its converter
    interleaves the two halves of every head (``convert_hf_to_gguf.py``'s ``permute``).
    """
    shape = rows.shape
    half = shape[0] // n_head // 2
    return rows.reshape(n_head, 2, half, *shape[1:]).swapaxes(1, 2).reshape(shape)


def unpermute_qk(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of :func:`permute_qk` (llama.cpp -> HF row order)."""
    shape = rows.shape
    half = shape[0] // n_head // 2
    return rows.reshape(n_head, half, 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def llama3_rope_factors(head_dim: int, theta: float, scaling: Mapping[str, Any]) -> np.ndarray:
    """The ``rope_freqs.weight`` llama.cpp stores for ``rope_type: llama3`` (per-frequency
    divisors of the rotary frequencies), computed as its converter does."""
    factor = float(scaling["factor"])
    low = float(scaling.get("low_freq_factor", 1.0))
    high = float(scaling.get("high_freq_factor", 4.0))
    old = float(scaling.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old / low, old / high
    freqs = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def llama3_scaling_from_factors(factors: np.ndarray, head_dim: int, theta: float,
                                path: str) -> dict[str, Any]:
    """Recover HF ``rope_scaling`` from a GGUF ``rope_freqs.weight``.

    llama.cpp keeps only the factors; they are those of the Llama 3.1+ defaults (low 1, high 4,
    original context 8192) scaled by ``factor`` in every published Llama 3.x model. Any
    other set is refused rather than guessed.
    """
    factor = float(np.max(factors))
    candidate = {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                 "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    if not np.allclose(llama3_rope_factors(head_dim, theta, candidate), factors, rtol=1e-5, atol=1e-6):
        raise GGUFError(f"{path}: tensor 'rope_freqs.weight' holds rotary factors that are not "
                        "Llama 3's (low_freq_factor 1, high_freq_factor 4, original context 8192); "
                        "their rope_scaling cannot be recovered")
    return candidate
