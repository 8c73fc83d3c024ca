"""AWQ (Lin et al., 2023): activation-aware weight quantization, stored in AutoAWQ's GEMM layout.

Per group of linear layers reading the same normalised input (``q/k/v_proj`` after
``input_layernorm``, ``gate/up_proj`` after ``post_attention_layernorm``), from their
calibration inputs ``X (tokens, in)``:

1. **Scale search**: input channels that carry large activations matter most, so the group's
   weights are scaled up by ``s = mean|X|^alpha`` (normalised) before rounding and the input
   is scaled down by ``1/s``: ``y = (x / s) @ Q(W * s)^T``. ``alpha`` is searched on a grid in
   [0, 1) for the smallest summed output error of the group (``alpha = 0`` is plain RTN).
   ``1/s`` is folded into the norm (as AutoAWQ does), so the layers are plain AWQ layers.
   Layers with no norm in front (``o_proj``, ``down_proj``, MoE experts, post-norm models)
   get no scale.
2. **Clipping search**: per output channel, the clipping range ``shrink * absmax`` (of each
   group) with the smallest error of that channel's output, ``shrink`` in ``[1 - max_shrink, 1]``.

A group whose final calibration error is above round-to-nearest's is stored as RTN (and
named in a :class:`~.calibration.CalibrationWarning`). Blocks are processed in order, each
calibrated on the outputs of the already-quantized earlier blocks. :func:`awq_quantize`
(one layer, ``pre_scale`` returned rather than folded) remains for experiments.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from typing import Any

from .base import CalibratedOptions
from .calibration import blocks_with_targets, run_capture
from .layers import (INT_RANGE, absmax_scales, dequantize_numpy, linear_targets, num_groups,
                     quantize_with_scales, rtn_quantize, set_submodule)
from .packed import AWQLinear
from .smoothquant import _fold_into_norm
from .standard import StandardLayoutQuantizer, output_error


class AWQOptions(CalibratedOptions):
    bits: int = Field(4, description="4 (AWQ's published layout is 4-bit)")
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


def awq_group_quantize(ws: list[np.ndarray], x: np.ndarray, *, bits: int, group_size: int,
                       scale_search: bool = True, n_grid: int = 20, clip: list[bool] | None = None,
                       max_shrink: float = 0.5, n_clip: int = 20, clip_tokens: int = 512):
    """Linears ``ws[i] (out_i, in)`` reading the same input ``x (N, in)``: one shared input
    scale ``s (in,)`` (searched on their concatenated outputs when ``scale_search``), then a
    clipping search per linear. Falls back to round-to-nearest for the whole group when that
    has the lower calibration error. Returns ``(s, [(q, scales)], info)``: linear ``i``
    computes ``(x / s) @ dequant(q_i, scales_i)^T``."""
    n_in = ws[0].shape[1]
    ws = [w.astype(np.float32) for w in ws]
    clip = [True] * len(ws) if clip is None else clip
    s = search_scale(np.concatenate(ws, axis=0), x, bits, group_size, n_grid)[0] if scale_search \
        else np.ones(n_in, np.float32)
    xc = x[:: max(1, len(x) // clip_tokens)][:clip_tokens] / s  # (<=clip_tokens, in)
    out, err, err_rtn, rtn = [], 0.0, 0.0, []
    for w, c in zip(ws, clip):
        wsc = w * s  # (out, in)
        scales = search_clip(wsc, xc, bits, group_size, max_shrink, n_clip) if c \
            else absmax_scales(wsc, bits, group_size)
        q = quantize_with_scales(wsc, scales, bits, group_size)
        out.append((q, scales))
        err += output_error(x, w, dequantize_numpy(q, scales, group_size) / s)
        q_r, s_r = rtn_quantize(w, bits, group_size)
        rtn.append((q_r, s_r))
        err_rtn += output_error(x, w, dequantize_numpy(q_r, s_r, group_size))
    if err_rtn < err:
        return np.ones(n_in, np.float32), rtn, {"method": "rtn", "loss": err_rtn, "rtn_loss": err_rtn}
    return s.astype(np.float32), out, {"method": "awq", "loss": err, "rtn_loss": err_rtn}


def scale_groups(model, targets: dict[str, Any]) -> list[tuple[Any, list[str]]]:
    """``(norm or None, [linear names])``: linears fed by the same pre-norm output share one
    AWQ scale folded into that norm; every other target stands alone (no norm: no scale)."""
    groups: list[tuple[Any, list[str]]] = []
    try:
        from .smoothquant import linear_groups

        found = linear_groups(model)
    except AttributeError:  # an architecture without the usual attribute names
        found = []
    covered: set[str] = set()
    for g in found:
        names = [r.name for r in g.linears]
        if g.norm is not None and len(names) and all(n in targets for n in names):
            groups.append((g.norm, names))
            covered.update(names)
    groups.extend((None, [n]) for n in targets if n not in covered)
    return groups


class AWQQuantizer(StandardLayoutQuantizer):
    """AWQ, written in AutoAWQ's GEMM layout (4-bit, zero points; see :mod:`.packed`)."""

    name = "awq"
    quant_types = ("awq",)
    quant_method = "awq"
    needs_calibration = True
    config_class = AWQOptions
    layer_class = AWQLinear

    def standard_config(self, quant_type, opts):
        return {"quant_method": "awq", "version": "gemm", "bits": opts.bits,
                "group_size": opts.group_size, "zero_point": True,
                "modules_to_not_convert": list(opts.modules_to_not_convert),
                "meta": {"quantizer": ["paddlellm-quant"]}}

    def load_pretrained(self, family, path, quantization_config, dtype="float32"):
        version = str(quantization_config.get("version", "gemm")).lower()
        if version != "gemm" and quantization_config.get("format") != "paddlellm":
            raise ValueError(f"{path}: AWQ version '{version}' is not read here; only the GEMM layout "
                             "(version: gemm, what AutoAWQ writes by default and transformers/vLLM load)")
        return super().load_pretrained(family, path, quantization_config, dtype=dtype)

    def empty_layer(self, lin, qc):
        in_f, out_f = lin.weight.shape
        return AWQLinear(in_f, out_f, bits=int(qc.get("bits", 4)), group_size=int(qc.get("group_size", -1)),
                         bias=lin.bias is not None, dtype=str(lin.weight.dtype).replace("paddle.", ""))

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        if opts.bits != 4:
            raise ValueError(f"awq: AWQ's published (GEMM) layout is 4-bit, got bits={opts.bits} "
                             "(use gptq for 8 bits)")
        model.eval()
        rng = np.random.default_rng(0)
        targets = self.packable_targets(dict(linear_targets(model, opts.modules_to_not_convert)), opts)
        tokens = self.check_calibration(model, batches, targets, opts)
        groups = scale_groups(model, targets)
        fallback: list[str] = []
        for block, layers in blocks_with_targets(model, targets):
            samples = {n: _TokenSample(opts.max_calib_tokens, rng) for n in layers}
            run_capture(model, batches, layers, lambda n, x: samples[n].add(x),
                        stop_after=block if block is not model else None)
            for norm, names in groups:
                if names[0] not in layers:
                    continue
                lins = [layers[n] for n in names]
                ws = [l.weight.astype("float32").numpy().T for l in lins]  # (out, in) each
                sample = samples[names[0]]
                seen = sample.seen > 0
                x = sample.array() if seen else np.ones((1, ws[0].shape[1]), np.float32)
                clip = [opts.clip and seen and not any(n.endswith("." + m) for m in opts.no_clip_modules)
                        for n in names]
                s, results, info = awq_group_quantize(
                    ws, x, bits=opts.bits, group_size=opts.group_size,
                    scale_search=norm is not None and seen, n_grid=opts.n_grid, clip=clip,
                    max_shrink=opts.max_shrink, n_clip=opts.n_clip, clip_tokens=opts.clip_tokens)
                if info["method"] == "rtn" and seen:
                    fallback.extend(names)
                if norm is not None and not np.all(s == 1):
                    _fold_into_norm(norm, s.astype(np.float64))
                for name, lin, (q, scales) in zip(names, lins, results):
                    set_submodule(model, name, AWQLinear.from_quantized(
                        q, scales, bits=opts.bits, group_size=opts.group_size, bias=lin.bias,
                        dtype=str(lin.weight.dtype).replace("paddle.", "")))
        self.report_fallback(model, fallback, len(targets), tokens, "layers (in groups sharing a scale)")


AWQ = AWQQuantizer()
