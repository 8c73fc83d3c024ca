"""Integer storage and the quantized linear layer against NumPy references."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm_quant.base import QuantizeError, QuantOptions, validate_options
from paddlellm_quant.layers import (WeightOnlyLinear, absmax_scales, dequantize_numpy, pack_int4,
                                    rtn_quantize, unpack_int4)


@pytest.mark.parametrize("cols", [8, 9])
def test_int4_pack_round_trip_two_per_byte(cols):
    rng = np.random.default_rng(0)
    q = rng.integers(-8, 8, size=(5, cols)).astype(np.int8)
    packed = pack_int4(q)
    assert packed.dtype == np.uint8 and packed.shape == (5, (cols + 1) // 2)
    # low nibble = even column, two's complement
    assert packed[0, 0] == ((int(q[0, 0]) & 0xF) | ((int(q[0, 1]) & 0xF) << 4))
    np.testing.assert_array_equal(unpack_int4(packed, cols), q)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        pack_int4(np.array([[9, 0]], np.int8))


@pytest.mark.parametrize("group_size", [-1, 16, 12])  # 12: ragged last group of 40 columns
def test_rtn_error_is_at_most_half_a_step(group_size):
    rng = np.random.default_rng(1)
    w = rng.normal(size=(6, 40)).astype(np.float32)
    for bits in (8, 4):
        q, scales = rtn_quantize(w, bits, group_size)
        n_groups = 1 if group_size == -1 else -(-40 // group_size)
        assert scales.shape == (6, n_groups)
        step = scales[:, np.arange(40) // (40 if group_size == -1 else group_size)]
        assert np.all(np.abs(dequantize_numpy(q, scales, group_size) - w) <= step / 2 + 1e-6)
        # the group's largest weight sits exactly on the grid's end
        assert np.abs(q).max() == (127 if bits == 8 else 7)


@pytest.mark.parametrize("bits,group_size,bias,pre", [(8, -1, True, False), (4, 16, False, False),
                                                      (4, 12, True, True), (8, 32, False, True)])
def test_layer_forward_equals_numpy_dequantized_matmul(bits, group_size, bias, pre):
    rng = np.random.default_rng(2)
    w = rng.normal(size=(24, 40)).astype(np.float32)  # (out, in)
    q, scales = rtn_quantize(w, bits, group_size)
    b = paddle.to_tensor(rng.normal(size=24).astype(np.float32)) if bias else None
    pre_scale = rng.uniform(0.5, 2, size=40).astype(np.float32) if pre else None
    layer = WeightOnlyLinear.from_quantized(q, scales, bits=bits, group_size=group_size, bias=b,
                                            pre_scale=pre_scale)
    np.testing.assert_array_equal(layer.int_weight(), q)
    x = rng.normal(size=(2, 3, 40)).astype(np.float32)
    xs = x * pre_scale if pre else x
    want = xs @ dequantize_numpy(q, scales, group_size).T + (b.numpy() if bias else 0)
    got = layer(paddle.to_tensor(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # what PEFT reads from a quantized base: (in, out), pre_scale folded in
    folded = dequantize_numpy(q, scales, group_size) * (pre_scale if pre else 1)
    np.testing.assert_allclose(layer.dequantize_weight().numpy(), folded.T, rtol=1e-6, atol=1e-6)
    assert str(layer.qweight.dtype).endswith("uint8" if bits == 4 else "int8")


def test_from_linear_is_rtn_and_keeps_bias():
    paddle.seed(0)
    lin = paddle.nn.Linear(32, 8)
    layer = WeightOnlyLinear.from_linear(lin, bits=8, group_size=16)
    q, scales = rtn_quantize(lin.weight.numpy().T, 8, 16)
    np.testing.assert_array_equal(layer.int_weight(), q)
    np.testing.assert_allclose(layer.scales.numpy(), scales)
    np.testing.assert_allclose(layer.bias.numpy(), lin.bias.numpy())


def test_bad_input_errors_name_the_problem():
    with pytest.raises(ValueError, match="bits must be one of"):
        WeightOnlyLinear(8, 8, bits=3)
    with pytest.raises(QuantizeError, match="group_size must be -1"):
        validate_options(QuantOptions, {"group_size": 0}, "weight_only_int4")
    with pytest.raises(QuantizeError, match="unknown option.*grup_size.*valid: group_size"):
        validate_options(QuantOptions, {"grup_size": 64}, "weight_only_int4")
    layer = WeightOnlyLinear(4, 2, bits=4)
    with pytest.raises(ValueError, match=r"4-bit values must lie in \[-8, 7\]"):
        layer.set_quantized(np.full((2, 4), 9, np.int8), np.ones((2, 1), np.float32))
    with pytest.raises(ValueError, match="does not match"):
        layer.set_quantized(np.zeros((4, 2), np.int8), np.ones((4, 1), np.float32))
    assert absmax_scales(np.zeros((2, 4), np.float32), 4, -1).min() > 0  # all-zero rows: no 0 scale
