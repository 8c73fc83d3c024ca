"""GPTQ and AWQ lower the layer-wise reconstruction error ||X W^T - X Q^T|| against RTN."""
from __future__ import annotations

import numpy as np
import pytest

from paddlellm_quant.awq import awq_quantize, search_scale
from paddlellm_quant.gptq import HessianAccumulator, gptq_quantize
from paddlellm_quant.layers import dequantize_numpy, rtn_quantize


def correlated_inputs(rng, n: int, d: int) -> np.ndarray:
    """Inputs with correlated channels of unequal scale (like real activations)."""
    latent = rng.normal(size=(n, d // 4)) @ rng.normal(size=(d // 4, d))  # (n, d), rank d/4
    x = latent + 0.3 * rng.normal(size=(n, d))
    return (x * rng.uniform(0.2, 3.0, size=d)).astype(np.float32)


def output_error(x, w, wq) -> float:
    return float(np.linalg.norm(x @ w.T - x @ wq.T))


def test_hessian_accumulates_two_over_n_xtx():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 6))
    acc = HessianAccumulator(6)
    acc.add(x[:20])
    acc.add(x[20:])
    np.testing.assert_allclose(acc.H, 2 / 50 * x.T @ x, rtol=1e-12)


@pytest.mark.parametrize("group_size,act_order", [(-1, False), (16, False), (16, True), (24, False)])
def test_gptq_beats_rtn_on_layer_reconstruction(group_size, act_order):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(32, 64)).astype(np.float32)  # (out, in)
    x = correlated_inputs(rng, 512, 64)
    acc = HessianAccumulator(64)
    acc.add(x)
    q, scales = gptq_quantize(w, acc.H, bits=4, group_size=group_size, act_order=act_order,
                              blocksize=32)
    q_rtn, s_rtn = rtn_quantize(w, 4, group_size)
    assert q.dtype == np.int8 and q.min() >= -8 and q.max() <= 7
    err = output_error(x, w, dequantize_numpy(q, scales, group_size))
    err_rtn = output_error(x, w, dequantize_numpy(q_rtn, s_rtn, group_size))
    assert err < 0.6 * err_rtn, (err, err_rtn)


def test_gptq_without_correlation_or_damping_signal_matches_rtn_per_channel():
    """With H = I every column is independent: GPTQ reduces to round-to-nearest."""
    rng = np.random.default_rng(2)
    w = rng.normal(size=(8, 16)).astype(np.float32)
    q, scales = gptq_quantize(w, np.eye(16), bits=4, group_size=-1, percdamp=0.0)
    q_rtn, s_rtn = rtn_quantize(w, 4, -1)
    np.testing.assert_array_equal(q, q_rtn)
    np.testing.assert_allclose(scales, s_rtn)


def test_awq_beats_rtn_with_outlier_input_channels():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(48, 64)).astype(np.float32)
    x = rng.normal(size=(1024, 64)).astype(np.float32)
    x[:, [3, 17, 40, 41]] *= 25.0  # a few salient channels, as in LLM activations
    for group_size in (-1, 32):
        q, scales, pre = awq_quantize(w, x, bits=4, group_size=group_size)
        w_awq = dequantize_numpy(q, scales, group_size) * pre  # what the layer computes with
        q_rtn, s_rtn = rtn_quantize(w, 4, group_size)
        err = output_error(x, w, w_awq)
        err_rtn = output_error(x, w, dequantize_numpy(q_rtn, s_rtn, group_size))
        assert err < 0.7 * err_rtn, (group_size, err, err_rtn)
    s, alpha = search_scale(w, x, 4, -1)
    assert alpha > 0 and s[[3, 17, 40, 41]].min() > np.median(s)  # salient channels scaled up


def test_awq_search_never_worse_than_rtn_without_outliers():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    x = rng.normal(size=(256, 32)).astype(np.float32)
    q, scales, pre = awq_quantize(w, x, bits=4, group_size=-1, clip=False)
    q_rtn, s_rtn = rtn_quantize(w, 4, -1)
    err = output_error(x, w, dequantize_numpy(q, scales, -1) * pre)
    assert err <= output_error(x, w, dequantize_numpy(q_rtn, s_rtn, -1)) + 1e-6
