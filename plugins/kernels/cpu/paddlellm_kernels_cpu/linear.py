"""Compiled matrix-vector and small-batch products: weight-only int8 / int4, and float32.

``y = x @ dequant(qweight, scales).T`` straight from the stored integers, in integer
arithmetic: each row of x is written as two int16 terms, ``s1 * q1 + s2 * q2`` (``q1`` the row
rounded to int16 against its largest entry, ``q2`` the remainder likewise: x to ~2^-31 of its
largest entry, finer than float32's rounding of the products), and each weight row meets both
in exact int32 dot products of int16 pairs -- VNNI's ``vpdpwssd`` (32 multiply-adds per
instruction) where the CPU has it, ``vpmaddwd`` + add on AVX-512/AVX2 -- scaled once per group.
Each weight byte is read once; no float copy of the weight is ever written (the layer's own
path materialises one per call). Per-channel int8 at one row was bound by widening every
weight to float32 (16 per convert-FMA sequence): 1.2-1.5x faster this way on the same CPU.
No 8-bit activation quantization (llama.cpp's Q8_0 path): the results stay those of the float
reference within rounding. Tiles of 1 x 8 (int8) or 1 x 4 (int4) weight rows for one input
row, 2 x 4 for more; output rows are spread over threads. Calls with more rows than
``MAX_ROWS`` (prefill) return ``None``: there the layer's dequantize + MKL GEMM, whose cost is
spread over many rows, is faster.

Float32 layers (``LinearSpec(bits=32)``: the models plugin's linear layers and output heads at
decode) get a product that streams whole runs of the weight's rows (contiguous memory) into a
block of the output held in L1, eight weight rows per pass; narrow outputs split the weight's
rows over the threads and add the partial sums, wide ones split the columns. At one to a few
rows this is a pure memory stream, where Paddle's MKL call was measured below the copy
bandwidth (and far below it for the 32000-column head); prefills keep MKL's GEMM.
"""
from __future__ import annotations

import paddle

from paddlellm.interfaces import LinearSpec

from . import build

#: beyond this many rows a call is a prefill: declined (the layer's GEMM path is faster)
MAX_ROWS = 16


class CpuWeightOnlyLinear:
    name = "cpu"
    backends = ("cpu",)
    priority = 10

    def supports(self, spec: LinearSpec) -> bool:
        """float32 activations; float32 weights, or int8 / int4 per-channel or in groups (even
        for int4); True only once the library is built."""
        if spec.dtype != "float32" or spec.bits not in (32, 8, 4):
            return False
        if spec.group_size not in (-1, 0) and spec.group_size < spec.in_features:
            if spec.group_size <= 0 or (spec.bits == 4 and spec.group_size % 2):
                return False
        return build.ops() is not None

    def info(self) -> dict:
        return build.info()

    def __call__(self, x, qweight, scales, *, bits, group_size, transposed=False):
        rows = 1
        for d in x.shape[:-1]:
            rows *= d
        if rows > MAX_ROWS or x.dtype != paddle.float32:
            return None
        ops = build.ops()
        if ops is None:
            return None
        if bits == 32:  # qweight: the float weight (in, out), or (out, in) when transposed
            if qweight.dtype != paddle.float32 or (scales is not None and scales.dtype != paddle.float32):
                return None
            return ops.plk_float_matmul(x, qweight, _no_bias() if scales is None else scales,
                                        bool(transposed), build.num_threads(), build.isa_code())
        if scales.dtype != paddle.float32:
            return None
        return ops.plk_weight_only_matmul(x, qweight, scales, int(bits), int(group_size),
                                          build.num_threads(), build.isa_code())


_EMPTY: list = []


def _no_bias():
    """The empty tensor the float operator reads as "no bias" (made once)."""
    if not _EMPTY:
        _EMPTY.append(paddle.zeros([0], dtype="float32"))
    return _EMPTY[0]


kernel = CpuWeightOnlyLinear()
