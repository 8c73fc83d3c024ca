"""Paddle's fused weight-only GEMM on GPU agrees with the dequantize-on-the-fly path.

Runs only where Paddle has CUDA and a GPU (skipped on CPU-only machines such as CI)."""
from __future__ import annotations

import warnings

import numpy as np
import paddle
import pytest

from paddlellm_quant.layers import WeightOnlyLinear, rtn_quantize

pytestmark = pytest.mark.skipif(
    not (paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0),
    reason="needs Paddle with CUDA and a GPU")


@pytest.mark.parametrize("bits,group_size", [(8, -1), (4, -1), (8, 64), (4, 128)])
def test_weight_only_linear_kernel_matches_dequantized_matmul(bits, group_size):
    paddle.set_device("gpu")
    rng = np.random.default_rng(0)
    w = rng.normal(size=(256, 512)).astype(np.float32)  # (out, in)
    q, scales = rtn_quantize(w, bits, group_size)
    layer = WeightOnlyLinear.from_quantized(q, scales, bits=bits, group_size=group_size,
                                            dtype="float16")
    x = paddle.to_tensor(rng.normal(size=(4, 512)).astype(np.float16))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fused = layer(x).astype("float32").numpy()
    assert layer._gpu_weights is not None, [str(r.message) for r in record]
    reference = (x.astype("float32") @ layer.dequantize("float32").T).numpy()
    np.testing.assert_allclose(fused, reference, rtol=2e-2, atol=2e-2 * np.abs(reference).max())
