"""AWQ (Lin et al., 2023): activation-aware weight quantization.

Per linear layer, from its calibration inputs ``X (tokens, in)``:

1. **Scale search**: input channels that carry large activations matter most, so weights are
   scaled up by ``s = mean|X|^alpha`` (normalised) before rounding and the input is scaled
   down by ``1/s``: ``y = (x / s) @ Q(W * s)^T``. ``alpha`` is searched on a grid in [0, 1)
   for the smallest output error ``||X W^T - X (Q(W s) / s)^T||`` (``alpha = 0`` is plain RTN,
   so the search never does worse than RTN on the calibration data).
2. **Clipping search**: per output channel, the clipping range ``shrink * absmax`` (of each
   group) with the smallest error of that channel's output, ``shrink`` in ``[1 - max_shrink, 1]``.

``1/s`` is stored as the layer's ``pre_scale`` (``(in,)``) rather than folded into the
previous operation: exact for every architecture (norm, linear or attention before it) at the
cost of one elementwise multiply per call. Blocks are processed in order, each calibrated on
the outputs of the already-quantized earlier blocks.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import BaseQuantizer, QuantOptions
from .calibration import blocks_with_targets, run_capture
from .layers import (INT_RANGE, WeightOnlyLinear, absmax_scales, dequantize_numpy, linear_targets,
                     num_groups, quantize_with_scales, set_submodule)


class AWQOptions(QuantOptions):
    bits: int = Field(4, description="4 or 8")
    group_size: int = Field(128, description="input columns per scale; -1 = per channel")
    n_grid: int = Field(20, gt=0, description="grid points of the scale exponent alpha in [0, 1)")
    clip: bool = Field(True, description="search a clipping range per output channel and group")
    max_shrink: float = Field(0.5, ge=0, lt=1, description="clipping search down to (1 - max_shrink) * absmax")
    n_clip: int = Field(20, gt=0, description="clipping grid points")
    max_calib_tokens: int = Field(2048, gt=0, description="calibration tokens kept per layer (scale search)")
    clip_tokens: int = Field(512, gt=0, description="of which used by the clipping search")
    no_clip_modules: list[str] = Field(
        default_factory=list,
        description="layers left out of the clipping search (e.g. q_proj k_proj, as AutoAWQ does)")


def _fake_quant(w: np.ndarray, bits: int, group_size: int) -> np.ndarray:
    scales = absmax_scales(w, bits, group_size)
    return dequantize_numpy(quantize_with_scales(w, scales, bits, group_size), scales, group_size)


def search_scale(w: np.ndarray, x: np.ndarray, bits: int, group_size: int,
                 n_grid: int = 20) -> tuple[np.ndarray, float]:
    """Best input-channel scale ``s (in,)`` for ``w (out, in)`` on inputs ``x (N, in)``, and its alpha."""
    x = x.astype(np.float32)
    x_mean = np.abs(x).mean(axis=0) + 1e-8  # (in,)
    y = x @ w.T  # (N, out)
    best = (np.inf, np.ones(w.shape[1], np.float32), 0.0)
    for r in range(n_grid):
        alpha = r / n_grid
        s = x_mean ** alpha
        s = s / np.sqrt(s.max() * s.min())
        s = np.clip(s, 1e-4, None).astype(np.float32)
        wq = _fake_quant(w * s, bits, group_size) / s  # (out, in)
        err = float(np.mean((x @ wq.T - y) ** 2))
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def search_clip(w: np.ndarray, x: np.ndarray, bits: int, group_size: int, max_shrink: float = 0.5,
                n_clip: int = 20) -> np.ndarray:
    """Scales ``(out, n_groups)`` from the clipping range ``shrink * absmax`` of least output
    error, ``shrink`` chosen per output channel (shared by its groups) on the exact error of
    that channel's output ``mean_n (x_n . (w_o - q_o))^2``. Unlike a per-group choice (which
    ignores that clipping errors of one channel's groups add up with the same sign), this
    never does worse than no clipping on ``x``; ``shrink = 1`` is a candidate."""
    out, n = w.shape
    lo, hi = INT_RANGE[bits]
    G = num_groups(n, group_size)
    g = n if G == 1 else group_size
    pad = G * g - n
    wp = np.pad(w, ((0, 0), (0, pad))).reshape(out, G, g)  # (out, G, g)
    amax = np.abs(wp).max(axis=-1)  # (out, G)
    amax = np.where(amax > 0, amax, 1.0)
    best_err = np.full(out, np.inf)
    best_scale = amax / hi
    for k in range(n_clip):
        shrink = 1.0 - max_shrink * k / n_clip
        scale = amax * shrink / hi  # (out, G)
        q = np.clip(np.rint(wp / scale[..., None]), lo, hi) * scale[..., None]  # (out, G, g)
        d = (wp - q).reshape(out, G * g)[:, :n]  # (out, in)
        err = x @ d.T  # (N, out)
        err = (err * err).mean(axis=0)  # (out,)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_scale = np.where(better[:, None], scale, best_scale)
    return best_scale.astype(np.float32)


def awq_quantize(w: np.ndarray, x: np.ndarray, *, bits: int, group_size: int, n_grid: int = 20,
                 clip: bool = True, max_shrink: float = 0.5, n_clip: int = 20,
                 clip_tokens: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``w (out, in)``, inputs ``x (N, in)`` -> ``(int8 q, scales (out, G), pre_scale (in,))``
    with ``w ~= dequant(q, scales) * pre_scale`` column-wise."""
    w = w.astype(np.float32)
    s, _ = search_scale(w, x, bits, group_size, n_grid)
    ws = w * s  # (out, in)
    if clip:
        xc = x[:: max(1, len(x) // clip_tokens)][:clip_tokens] / s  # (<=clip_tokens, in)
        scales = search_clip(ws, xc, bits, group_size, max_shrink, n_clip)
    else:
        scales = absmax_scales(ws, bits, group_size)
    q = quantize_with_scales(ws, scales, bits, group_size)
    return q, scales, (1.0 / s).astype(np.float32)


class _TokenSample:
    """Keeps up to ``limit`` input rows of one layer (a uniform random subset)."""

    def __init__(self, limit: int, rng: np.random.Generator) -> None:
        self.rows: list[np.ndarray] = []
        self.limit, self.rng, self.seen = limit, rng, 0

    def add(self, x: np.ndarray) -> None:
        self.rows.append(x)
        self.seen += len(x)

    def array(self) -> np.ndarray:
        x = np.concatenate(self.rows)
        if len(x) > self.limit:
            x = x[np.sort(self.rng.choice(len(x), self.limit, replace=False))]
        return x


class AWQQuantizer(BaseQuantizer):
    name = "awq"
    quant_types = ("awq",)
    quant_method = "awq"
    needs_calibration = True
    config_class = AWQOptions

    def quantization_config(self, quant_type, opts):
        qc = super().quantization_config(quant_type, opts)
        qc["pre_scale"] = True  # layers carry pre_scale (1/s) buffers
        return qc

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        if opts.bits not in INT_RANGE:
            raise ValueError(f"awq: bits must be 4 or 8, got {opts.bits}")
        model.eval()
        rng = np.random.default_rng(0)
        targets = dict(linear_targets(model, opts.modules_to_not_convert))
        for block, layers in blocks_with_targets(model, targets):
            samples = {n: _TokenSample(opts.max_calib_tokens, rng) for n in layers}
            run_capture(model, batches, layers, lambda n, x: samples[n].add(x),
                        stop_after=block if block is not model else None)
            for name, lin in layers.items():
                w = lin.weight.astype("float32").numpy().T  # (out, in)
                if samples[name].seen == 0:  # e.g. an MoE expert no token reached: plain RTN
                    x = np.ones((1, w.shape[1]), np.float32)
                else:
                    x = samples[name].array()
                clip = opts.clip and not any(name.endswith("." + m) for m in opts.no_clip_modules)
                q, scales, pre = awq_quantize(w, x, bits=opts.bits, group_size=opts.group_size,
                                              n_grid=opts.n_grid, clip=clip,
                                              max_shrink=opts.max_shrink, n_clip=opts.n_clip,
                                              clip_tokens=opts.clip_tokens)
                set_submodule(model, name, WeightOnlyLinear.from_quantized(
                    q, scales, bits=opts.bits, group_size=opts.group_size, bias=lin.bias,
                    pre_scale=pre, dtype=str(lin.weight.dtype).replace("paddle.", "")))


AWQ = AWQQuantizer()
