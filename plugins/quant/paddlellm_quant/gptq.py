"""GPTQ (Frantar et al., 2022): quantize columns one at a time, spreading each column's
rounding error over the not-yet-quantized columns through the inverse Hessian of the
layer-wise loss ``||W X - Q X||^2`` (``H = 2 X X^T / n`` from calibration inputs).

Options: ``percdamp`` (dampening ``percdamp * mean(diag H)`` added to the diagonal),
``act_order`` (columns in order of decreasing ``diag H``; with groups, scales are fixed per
group up front -- "static groups" -- so the checkpoint keeps the plain group layout),
``group_size``, ``blocksize`` (lazy batch updates). Decoder blocks are processed in order and
each block's inputs come from the already-quantized earlier blocks (sequential).
"""
from __future__ import annotations

import numpy as np
from pydantic import Field

from .base import BaseQuantizer, QuantOptions
from .calibration import blocks_with_targets, run_capture
from .layers import INT_RANGE, WeightOnlyLinear, absmax_scales, group_index, linear_targets, set_submodule


class GPTQOptions(QuantOptions):
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


class GPTQQuantizer(BaseQuantizer):
    name = "gptq"
    quant_types = ("gptq",)
    quant_method = "gptq"
    needs_calibration = True
    config_class = GPTQOptions

    def quantization_config(self, quant_type, opts):
        qc = super().quantization_config(quant_type, opts)
        qc["desc_act"] = opts.act_order  # the name GPTQ checkpoints use
        return qc

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        if opts.bits not in INT_RANGE:
            raise ValueError(f"gptq: bits must be 4 or 8, got {opts.bits}")
        model.eval()
        targets = dict(linear_targets(model, opts.modules_to_not_convert))
        for block, layers in blocks_with_targets(model, targets):
            acc = {n: HessianAccumulator(l.weight.shape[0]) for n, l in layers.items()}
            run_capture(model, batches, layers, lambda n, x: acc[n].add(x),
                        stop_after=block if block is not model else None)
            for name, lin in layers.items():
                w = lin.weight.astype("float32").numpy().T  # (out, in)
                q, scales = gptq_quantize(w, acc[name].H, bits=opts.bits, group_size=opts.group_size,
                                          percdamp=opts.percdamp, act_order=opts.act_order,
                                          blocksize=opts.blocksize)
                set_submodule(model, name, WeightOnlyLinear.from_quantized(
                    q, scales, bits=opts.bits, group_size=opts.group_size, bias=lin.bias,
                    dtype=str(lin.weight.dtype).replace("paddle.", "")))


GPTQ = GPTQQuantizer()
