"""Rotary-embedding frequencies for every ``rope_type`` transformers writes.

``default``, ``linear``, ``dynamic`` (NTK, recomputed from the call's longest position),
``llama3``, ``yarn`` and ``longrope`` (Phi-3: long or short factors by the call's longest
position); the formulas follow ``transformers.modeling_rope_utils``. NumPy only.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

SUPPORTED = ("default", "linear", "dynamic", "llama3", "yarn", "longrope")
#: types whose frequencies depend on the longest position of the call
LENGTH_DEPENDENT = ("dynamic", "longrope")


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    exponent = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (1.0 / (np.float32(base) ** exponent)).astype(np.float32)  # (dim/2,)


def rope_type(scaling: Mapping[str, Any] | None) -> str:
    if not scaling:
        return "default"
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in SUPPORTED:
        raise ValueError(f"unsupported rope_type '{kind}'; supported: {', '.join(SUPPORTED)}")
    return kind


def inv_freq(dim: int, theta: float, scaling: Mapping[str, Any] | None,
             max_position_embeddings: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """``(inv_freq (dim/2,), attention_factor)``; ``seq_len`` matters only for ``dynamic``."""
    kind = rope_type(scaling)
    if kind == "default":
        return _base_inv_freq(theta, dim), 1.0
    factor = float(scaling["factor"]) if scaling.get("factor") is not None else None
    if kind == "linear":
        return (_base_inv_freq(theta, dim) / np.float32(factor)).astype(np.float32), 1.0
    if kind == "dynamic":
        seq_len = max(seq_len or max_position_embeddings, max_position_embeddings)
        base = theta * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
        return _base_inv_freq(base, dim), 1.0
    if kind == "llama3":
        return _llama3(dim, theta, scaling, factor), 1.0
    if kind == "longrope":
        return _longrope(dim, theta, scaling, factor, max_position_embeddings, seq_len)
    return _yarn(dim, theta, scaling, factor, max_position_embeddings)


def _longrope(dim: int, theta: float, s: Mapping[str, Any], factor: float | None,
              max_position_embeddings: int, seq_len: int | None) -> tuple[np.ndarray, float]:
    original = s["original_max_position_embeddings"]
    if factor is None:
        factor = max_position_embeddings / original
    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(original))
    ext = np.asarray(s["long_factor"] if seq_len and seq_len > original else s["short_factor"],
                     dtype=np.float32)
    if ext.shape != (dim // 2,):
        raise ValueError(f"longrope factors must have {dim // 2} entries, got {ext.shape[0]}")
    shape = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    return (1.0 / (ext * np.float32(theta) ** shape)).astype(np.float32), float(attention_factor)


def _llama3(dim: int, theta: float, s: Mapping[str, Any], factor: float) -> np.ndarray:
    freq = _base_inv_freq(theta, dim)
    low, high = float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = (2 * math.pi / freq).astype(np.float32)
    scaled = np.where(wavelen > low_wavelen, freq / np.float32(factor), freq).astype(np.float32)
    smooth = ((old_len / wavelen - low) / (high - low)).astype(np.float32)
    smoothed = (1 - smooth) * scaled / np.float32(factor) + smooth * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(dim: int, theta: float, s: Mapping[str, Any], factor: float | None,
          max_position_embeddings: int) -> tuple[np.ndarray, float]:
    original = s.get("original_max_position_embeddings") or max_position_embeddings
    if factor is None:
        factor = max_position_embeddings / original

    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = s.get("attention_factor")
    if attention_factor is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention_factor = (float(mscale(factor, m) / mscale(factor, m_all)) if m and m_all
                            else mscale(factor))
    beta_fast = s.get("beta_fast") or 32
    beta_slow = s.get("beta_slow") or 1

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(original / (rotations * 2 * math.pi))) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    pos_freqs = np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
    extrapolation = (1.0 / pos_freqs).astype(np.float32)
    interpolation = (1.0 / (np.float32(factor) * pos_freqs)).astype(np.float32)
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - low) / (high - low), 0, 1)
    extra_factor = (1 - ramp).astype(np.float32)
    freq = interpolation * (1 - extra_factor) + extrapolation * extra_factor
    return freq.astype(np.float32), float(attention_factor)
