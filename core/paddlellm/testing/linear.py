"""A NumPy float64 reference and a conformance check for linear-kernel plugins.

``check_linear_kernel`` runs a :class:`paddlellm.interfaces.WeightOnlyLinearKernel` on every
case it claims to support -- float32 weights in both layouts (``bits=32``), int8 and int4
weights per channel and in groups (a shorter last group, odd widths), with and without a
bias, at 1, 3 and 16 rows -- and compares its result with the product computed in float64 from
the same stored weights (``llm kernels check NAME``). A kernel may decline a call (return
``None``, e.g. a prefill's many rows); it must not return something else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..interfaces import LinearSpec
from .attention import CheckResult

ROWS = (1, 3, 16)


@dataclass(frozen=True)
class LinearCase:
    name: str
    spec: LinearSpec
    bias: bool = False


def linear_cases() -> list[LinearCase]:
    """The cases a linear kernel is checked on (each once per row count in ``ROWS``)."""
    def spec(bits, n_in, n_out, group_size=-1, transposed=False):
        return LinearSpec(bits=bits, group_size=group_size, dtype="float32", in_features=n_in,
                          out_features=n_out, transposed=transposed)

    return [
        LinearCase("float32", spec(32, 512, 1408)),
        LinearCase("float32_bias_odd", spec(32, 517, 37), bias=True),
        LinearCase("float32_narrow", spec(32, 1408, 256)),
        LinearCase("float32_out_in", spec(32, 256, 3001, transposed=True)),
        LinearCase("float32_out_in_bias", spec(32, 37, 13, transposed=True), bias=True),
        LinearCase("int8_channel", spec(8, 512, 1408)),
        LinearCase("int8_groups", spec(8, 517, 7, group_size=48)),
        LinearCase("int4_channel", spec(4, 1408, 512)),
        LinearCase("int4_groups", spec(4, 517, 13, group_size=32)),
    ]


def case_weights(case: LinearCase, seed: int = 0) -> dict[str, np.ndarray]:
    """Stored weights of ``case`` (the layout the kernel receives) and ``w``, the float64
    ``(in, out)`` matrix they stand for."""
    rng = np.random.default_rng(seed)
    s = case.spec
    n_in, n_out = s.in_features, s.out_features
    out: dict[str, np.ndarray] = {}
    if case.bias:
        out["bias"] = rng.standard_normal(n_out).astype(np.float32)
    if s.bits == 32:
        w = (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32)
        out["weight"] = np.ascontiguousarray(w.T) if s.transposed else w
        out["w"] = w.astype(np.float64)
        return out
    lo, hi = (-128, 128) if s.bits == 8 else (-8, 8)
    q = rng.integers(lo, hi, (n_out, n_in)).astype(np.int8)
    group = n_in if s.group_size in (-1, 0) else s.group_size
    groups = -(-n_in // group)
    scales = (rng.random((n_out, groups)) * 0.02 + 0.001).astype(np.float32)
    w = q.astype(np.float64) * np.repeat(scales.astype(np.float64), group, axis=1)[:, :n_in]
    if s.bits == 4:  # two's-complement nibbles, column 2j low, 2j + 1 high
        padded = np.zeros((n_out, (n_in + 1) // 2 * 2), np.int8)
        padded[:, :n_in] = q
        nib = padded.astype(np.uint8) & 0x0F
        q = (nib[:, 0::2] | (nib[:, 1::2] << 4)).astype(np.uint8)
    out.update(weight=q, scales=scales, w=w.T)
    return out


def run_linear_case(kernel: Any, case: LinearCase, weights: dict[str, np.ndarray],
                    x: np.ndarray):
    """The kernel's result for ``x`` (rows, in), as NumPy, or None where it declined."""
    import paddle

    s = case.spec
    xt = paddle.to_tensor(x)
    weight = paddle.to_tensor(weights["weight"])
    if s.bits == 32:
        bias = paddle.to_tensor(weights["bias"]) if case.bias else None
        y = kernel(xt, weight, bias, bits=32, group_size=-1, transposed=s.transposed)
    else:
        y = kernel(xt, weight, paddle.to_tensor(weights["scales"]), bits=s.bits,
                   group_size=s.group_size)
        if y is not None and case.bias:  # weight-only kernels leave the bias to the layer
            y = y + paddle.to_tensor(weights["bias"])
    return None if y is None else y.numpy()


def check_linear_kernel(kernel: Any, tolerance: float = 1e-5) -> list[CheckResult]:
    """Compare ``kernel`` with the float64 product on every supported case and row count.

    ``tolerance`` bounds ``max|out - ref| / max|ref|``; a call the kernel declines (``None``)
    passes (the layer's own math runs then)."""
    results = []
    for case in linear_cases():
        for rows in ROWS:
            name = f"{case.name}/{rows}"
            if not kernel.supports(case.spec):
                results.append(CheckResult(name, supported=False))
                continue
            weights = case_weights(case)
            x = np.random.default_rng(rows).standard_normal(
                (rows, case.spec.in_features)).astype(np.float32)
            expected = x.astype(np.float64) @ weights["w"]
            if case.bias:
                expected = expected + weights["bias"]
            try:
                got = run_linear_case(kernel, case, weights, x)
            except Exception as exc:  # a kernel that claims support must not raise
                results.append(CheckResult(name, True, passed=False, error=repr(exc)))
                continue
            if got is None:
                results.append(CheckResult(name, True, 0.0, True, error="declined"))
                continue
            if got.shape != expected.shape:
                results.append(CheckResult(name, True, passed=False,
                                           error=f"shape {got.shape}, expected {expected.shape}"))
                continue
            err = float(np.abs(got.astype(np.float64) - expected).max() / np.abs(expected).max())
            results.append(CheckResult(name, True, err, err <= tolerance))
    return results
