"""Sparsification of task vectors (deltas), in float32 NumPy.

* :func:`trim` — TIES (Yadav et al. 2023): keep the ``density`` fraction of entries with the
  largest magnitude, zero the rest.
* :func:`dare` — DARE (Yu et al. 2023): keep each entry independently with probability
  ``density``; rescale survivors by ``1 / density`` so the expectation is unchanged.
* :func:`magprune` — DELLA's MAGPRUNE (Deep et al. 2024): within each row, rank entries by
  magnitude; keep probabilities rise linearly with rank from ``density - epsilon`` to
  ``density + epsilon`` (mergekit's convention: ``epsilon`` is the half-width); rescale each
  survivor by ``1 / p_i``.

``rescale_norm`` picks the rescaling: ``None``/``"inverse"`` divides by the keep probability
(the papers); ``"l1"``, ``"l2"``, ``"linf"`` instead restore that norm of the whole tensor
(mergekit >= 0.1.5's behaviour).
"""
from __future__ import annotations

import zlib

import numpy as np

from .errors import MergeError

RESCALE_NORMS = (None, "inverse", "l1", "l2", "linf")


def tensor_rng(seed: int, name: str, index: int, row: int = 0) -> np.random.Generator:
    """The random stream for model ``index``'s delta of tensor ``name`` (from row ``row`` on,
    when merged in row blocks): reproducible under ``seed`` whatever the order or process."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode()), index, row])


def _norm(x: np.ndarray, kind: str) -> float:
    if kind == "l1":
        return float(np.abs(x).sum(dtype=np.float64))
    if kind == "l2":
        return float(np.sqrt(np.square(x, dtype=np.float64).sum()))
    return float(np.abs(x).max()) if x.size else 0.0


def _rescale(delta: np.ndarray, masked: np.ndarray, keep_prob, rescale_norm, eps=1e-7):
    """Rescale ``masked`` (= ``delta`` * mask) as ``rescale_norm`` says."""
    if rescale_norm in (None, "inverse"):
        return (masked / np.asarray(keep_prob, dtype=np.float32)).astype(np.float32)
    if rescale_norm not in RESCALE_NORMS:
        raise MergeError(f"unknown rescale_norm '{rescale_norm}'; expected one of "
                         "inverse, l1, l2, linf")
    before, after = _norm(delta, rescale_norm), _norm(masked, rescale_norm)
    if before < eps or after < eps:
        return masked
    return (masked * np.float32(before / after)).astype(np.float32)


def trim_count(density: float, numel: int) -> int:
    """How many entries TIES keeps: ``max(1, int(density * n))`` (mergekit's rule)."""
    return max(1, int(density * numel))


def trim_threshold(abs_values: np.ndarray, k: int) -> float:
    """The k-th largest of ``abs_values`` (a scratch float32 array: partitioned in place)."""
    flat = abs_values.reshape(-1)
    flat.partition(flat.size - k)
    return float(flat[flat.size - k])


def trim_mask(delta: np.ndarray, threshold: float, quota: int) -> np.ndarray:
    """Entries above ``threshold`` plus the first ``quota`` (in row-major order) equal to it."""
    mag = np.abs(delta)
    keep = mag > np.float32(threshold)
    if quota > 0:
        equal = np.flatnonzero(mag == np.float32(threshold))[:quota]
        keep.reshape(-1)[equal] = True
    return keep


def trim(delta: np.ndarray, density: float, *, rescale: bool = False,
         rescale_norm: str | None = None) -> np.ndarray:
    """Keep the ``max(1, int(density * n))`` largest-magnitude entries (TIES "trim"); among
    entries equal to the cut-off magnitude, the first in row-major order are kept."""
    if density >= 1:
        return delta
    if density <= 0 or delta.size == 0:
        return np.zeros_like(delta)
    k = trim_count(density, delta.size)
    thr = trim_threshold(np.abs(delta), k)
    quota = k - int(np.count_nonzero(np.abs(delta) > np.float32(thr)))
    masked = np.where(trim_mask(delta, thr, quota), delta, np.float32(0))
    return _rescale(delta, masked, density, rescale_norm) if rescale else masked


def dare(delta: np.ndarray, density: float, rng: np.random.Generator, *,
         rescale: bool = True, rescale_norm: str | None = None) -> np.ndarray:
    """Drop each entry with probability ``1 - density`` (DARE), then rescale."""
    if density >= 1:
        return delta
    if density <= 0:
        return np.zeros_like(delta)
    keep = rng.random(delta.shape, dtype=np.float32) < np.float32(density)
    masked = np.where(keep, delta, np.float32(0))
    return _rescale(delta, masked, density, rescale_norm) if rescale else masked


def magprune_probs(delta: np.ndarray, density: float, epsilon: float) -> np.ndarray:
    """DELLA keep probabilities: per row, linear in magnitude rank over
    ``[density - epsilon, density + epsilon]`` (smallest magnitude -> lowest)."""
    rows = delta.reshape(1, -1) if delta.ndim < 2 else delta.reshape(delta.shape[0], -1)
    n = rows.shape[1]  # rows: (R, n)
    order = np.argsort(np.abs(rows), axis=1, kind="stable")  # (R, n): ascending magnitude
    ranks = np.empty(rows.shape, dtype=np.int64)
    np.put_along_axis(ranks, order, np.arange(n, dtype=np.int64)[None, :], axis=1)
    rank_norm = ranks.astype(np.float32) / np.float32(max(n - 1, 1)) if n > 1 else \
        np.full(rows.shape, 0.5, dtype=np.float32)
    probs = np.float32(density - epsilon) + rank_norm * np.float32(2 * epsilon)
    return probs.reshape(delta.shape)


def magprune(delta: np.ndarray, density: float, epsilon: float, rng: np.random.Generator, *,
             rescale: bool = True, rescale_norm: str | None = None) -> np.ndarray:
    """DELLA's magnitude-based stochastic pruning, rescaled by ``1 / p_i``."""
    if density >= 1:
        return delta
    if density <= 0:
        return np.zeros_like(delta)
    if not (0 < density - epsilon and density + epsilon < 1):
        raise MergeError(f"della: density +/- epsilon must lie in (0, 1); got density={density}, "
                         f"epsilon={epsilon} (range {density - epsilon:g}..{density + epsilon:g})")
    probs = magprune_probs(delta, density, epsilon)
    keep = rng.random(delta.shape, dtype=np.float32) < probs
    masked = np.where(keep, delta, np.float32(0))
    return _rescale(delta, masked, probs, rescale_norm) if rescale else masked
