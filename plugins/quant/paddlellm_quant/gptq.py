"""GPTQ (Frantar et al., 2022): quantize columns one at a time, spreading each column's
rounding error over the not-yet-quantized columns through the inverse Hessian of the
layer-wise loss ``||W X - Q X||^2`` (``H = 2 X X^T / n`` from calibration inputs).

Options: ``percdamp`` (dampening ``percdamp * mean(diag H)`` added to the diagonal),
``act_order`` (columns in order of decreasing ``diag H``; with groups, scales are fixed per
group up front -- "static groups" -- so the checkpoint keeps the plain group layout),
``group_size``, ``blocksize`` (lazy batch updates). Decoder blocks are processed in order and
each block's inputs come from the already-quantized earlier blocks (sequential).

Safeguards: a :class:`~.calibration.CalibrationWarning` when the calibration data holds fewer
tokens than the model needs, and per layer the round-to-nearest result is kept instead when
its calibration loss ``tr((W - Q) H (W - Q)^T)`` is lower (listed in a warning and in
``quantization_config.meta.rtn_fallback``). Checkpoints are written in the GPTQ layout
(:mod:`.packed`).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import CalibratedOptions
from .calibration import blocks_with_targets, run_capture
from .layers import (INT_RANGE, absmax_scales, dequantize_numpy, group_index, linear_targets,
                     rtn_quantize, set_submodule)
from .packed import GPTQLinear
from .standard import StandardLayoutQuantizer


class GPTQOptions(CalibratedOptions):
    bits: int = Field(4, description="4 or 8")
    group_size: int = Field(128, description="input columns per scale; -1 = per channel")
    percdamp: float = Field(0.01, ge=0, description="dampening, fraction of the mean Hessian diagonal")
    act_order: bool = Field(False, description="quantize columns by decreasing Hessian diagonal")
    blocksize: int = Field(128, gt=0, description="columns per lazy batch update")


class HessianAccumulator:
    """Running ``H = 2/n * sum_t x_t x_t^T`` over ``(tokens, in)`` inputs (float64)."""

    def __init__(self, n_in: int) -> None:
        self.H = np.zeros((n_in, n_in), dtype=np.float64)
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        x = x.astype(np.float64)  # (N, in)
        m = x.shape[0]
        self.H *= self.n / (self.n + m)
        self.n += m
        x = np.sqrt(2.0 / self.n) * x
        self.H += x.T @ x


def gptq_quantize(w: np.ndarray, H: np.ndarray, *, bits: int, group_size: int = -1,
                  percdamp: float = 0.01, act_order: bool = False,
                  blocksize: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``w (out, in)`` and ``H (in, in)`` -> ``(int8 q (out, in), scales (out, n_groups))``."""
    lo, hi = INT_RANGE[bits]
    W = w.astype(np.float64).copy()  # (out, in)
    H = H.astype(np.float64).copy()  # (in, in)
    n = W.shape[1]
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    grouped = 0 < group_size < n
    gidx = group_index(n, group_size if grouped else -1)
    if not grouped or act_order:  # scales fixed up front (per channel, or static groups)
        scales = absmax_scales(W, bits, group_size if grouped else -1).astype(np.float64)
    else:
        scales = np.zeros((W.shape[0], gidx.max() + 1), dtype=np.float64)
        blocksize = group_size * max(1, blocksize // group_size)  # groups never straddle blocks
    perm = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(n)
    W, H = W[:, perm], H[perm][:, perm]
    H[np.diag_indices(n)] += percdamp * np.mean(np.diag(H))
    L = np.linalg.cholesky(H)
    Linv = np.linalg.solve(L, np.eye(n))
    Hinv = Linv.T @ Linv  # H^-1
    U = np.linalg.cholesky(Hinv).T  # upper: Hinv = U^T U
    Q = np.zeros_like(W)
    for i1 in range(0, n, blocksize):
        i2 = min(i1 + blocksize, n)
        W1 = W[:, i1:i2].copy()  # (out, b)
        Err1 = np.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = perm[i1 + i]  # original column index
            if grouped and not act_order and col % group_size == 0:
                g = gidx[col]
                amax = np.abs(W1[:, i:i + group_size]).max(axis=1)
                scales[:, g] = np.where(amax > 0, amax, 1.0) / hi
            s = scales[:, gidx[col]]  # (out,)
            w_col = W1[:, i]
            q = np.clip(np.rint(w_col / s), lo, hi)
            Q[:, i1 + i] = q
            err = (w_col - q * s) / U1[i, i]
            W1[:, i:] -= np.outer(err, U1[i, i:])
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    inv = np.argsort(perm)
    return Q[:, inv].astype(np.int8), scales.astype(np.float32)


def calibration_loss(w: np.ndarray, wq: np.ndarray, H: np.ndarray) -> float:
    """``tr((W - Wq) H (W - Wq)^T) / 2``: with ``H = 2/n X^T X`` the mean over calibration
    rows of ``||x W^T - x Wq^T||^2`` (the loss GPTQ minimises)."""
    d = w.astype(np.float64) - wq.astype(np.float64)  # (out, in)
    return float(np.sum((d @ H) * d) / 2)


def gptq_or_rtn(w: np.ndarray, H: np.ndarray, *, bits: int, group_size: int = -1,
                percdamp: float = 0.01, act_order: bool = False,
                blocksize: int = 128) -> tuple[np.ndarray, np.ndarray, dict[str, float | str]]:
    """GPTQ, unless round-to-nearest has the lower calibration loss (possible with little
    calibration data or strong dampening: GPTQ minimises the dampened loss). Returns
    ``(q, scales, {"method", "loss", "rtn_loss"})``."""
    q, scales = gptq_quantize(w, H, bits=bits, group_size=group_size, percdamp=percdamp,
                              act_order=act_order, blocksize=blocksize)
    q_rtn, s_rtn = rtn_quantize(w, bits, group_size)
    loss = calibration_loss(w, dequantize_numpy(q, scales, group_size), H)
    rtn_loss = calibration_loss(w, dequantize_numpy(q_rtn, s_rtn, group_size), H)
    if rtn_loss < loss:
        return q_rtn, s_rtn, {"method": "rtn", "loss": rtn_loss, "rtn_loss": rtn_loss, "gptq_loss": loss}
    return q, scales, {"method": "gptq", "loss": loss, "rtn_loss": rtn_loss, "gptq_loss": loss}


class GPTQQuantizer(StandardLayoutQuantizer):
    """GPTQ, written in the GPTQ layout (v1, symmetric; see :mod:`.packed`)."""

    name = "gptq"
    quant_types = ("gptq",)
    quant_method = "gptq"
    needs_calibration = True
    config_class = GPTQOptions
    layer_class = GPTQLinear

    def standard_config(self, quant_type, opts):
        return {"quant_method": "gptq", "bits": opts.bits, "group_size": opts.group_size,
                "desc_act": opts.act_order,
                # act-order with fixed per-group scales (g_idx stays the plain group index)
                "static_groups": opts.act_order,
                "sym": True, "true_sequential": False, "damp_percent": opts.percdamp,
                "checkpoint_format": "gptq", "lm_head": False,
                "modules_to_not_convert": list(opts.modules_to_not_convert),
                "meta": {"quantizer": ["paddlellm-quant"], "blocksize": opts.blocksize}}

    def empty_layer(self, lin, qc):
        in_f, out_f = lin.weight.shape
        return GPTQLinear(in_f, out_f, bits=int(qc["bits"]), group_size=int(qc.get("group_size", -1)),
                          bias=lin.bias is not None, dtype=str(lin.weight.dtype).replace("paddle.", ""),
                          checkpoint_format=qc.get("checkpoint_format") or "gptq")

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        if opts.bits not in INT_RANGE:
            raise ValueError(f"gptq: bits must be 4 or 8, got {opts.bits}")
        model.eval()
        targets = self.packable_targets(dict(linear_targets(model, opts.modules_to_not_convert)), opts)
        tokens = self.check_calibration(model, batches, targets, opts)
        fallback: list[str] = []
        for block, layers in blocks_with_targets(model, targets):
            acc = {n: HessianAccumulator(l.weight.shape[0]) for n, l in layers.items()}
            run_capture(model, batches, layers, lambda n, x: acc[n].add(x),
                        stop_after=block if block is not model else None)
            for name, lin in layers.items():
                w = lin.weight.astype("float32").numpy().T  # (out, in)
                q, scales, info = gptq_or_rtn(w, acc[name].H, bits=opts.bits, group_size=opts.group_size,
                                              percdamp=opts.percdamp, act_order=opts.act_order,
                                              blocksize=opts.blocksize)
                if info["method"] == "rtn":
                    fallback.append(name)
                set_submodule(model, name, GPTQLinear.from_quantized(
                    q, scales, bits=opts.bits, group_size=opts.group_size, bias=lin.bias,
                    dtype=str(lin.weight.dtype).replace("paddle.", "")))
        self.report_fallback(model, fallback, len(targets), tokens, "layers")


GPTQ = GPTQQuantizer()
