"""The GPTQ and AWQ layouts, tensor by tensor, against a packing written independently from
the formats' documentation (plain loops over words and bit slots, as AutoGPTQ's and AutoAWQ's
``pack`` describe them), and loading checkpoints written that way by "another tool"."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

import paddlellm
from paddlellm.modeling.auto import quantize_model
from paddlellm.checkpoint import CheckpointReader, save_state_dict
from paddlellm_quant.packed import AWQLinear, GPTQLinear, PackedLayoutError, awq_tensors, gptq_tensors
from quant_testutil import DEMO, load_demo

AWQ_ORDER_DOC = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ's order_map for 4-bit GEMM


# --- the reference: loops straight from the format descriptions ------------------------------

def ref_pack_gptq_qweight(intweight_in_out: np.ndarray, bits: int) -> np.ndarray:
    """``(in, out)`` unsigned -> ``(in * bits / 32, out)``: word row ``r`` holds input rows
    ``r*k + j`` at bit offset ``bits * j``."""
    k = 32 // bits
    n_in, n_out = intweight_in_out.shape
    packed = np.zeros((n_in // k, n_out), dtype=np.uint64)
    for r in range(n_in // k):
        for j in range(k):
            packed[r] |= intweight_in_out[r * k + j].astype(np.uint64) << np.uint64(bits * j)
    return packed.astype(np.uint32).view(np.int32)


def ref_pack_along_out(values: np.ndarray, bits: int, order=None) -> np.ndarray:
    """``(rows, out)`` unsigned -> ``(rows, out * bits / 32)``; slot ``i`` of word ``c`` holds
    column ``c*k + order[i]``."""
    k = 32 // bits
    order = order or list(range(k))
    rows, n_out = values.shape
    packed = np.zeros((rows, n_out // k), dtype=np.uint64)
    for c in range(n_out // k):
        for i in range(k):
            packed[:, c] |= values[:, c * k + order[i]].astype(np.uint64) << np.uint64(bits * i)
    return packed.astype(np.uint32).view(np.int32)


def ref_unpack_word(word: int, bits: int, slot: int) -> int:
    return (int(np.uint32(np.int32(word).view(np.uint32))) >> (bits * slot)) & (2**bits - 1)


def ref_dequant_gptq(t: dict, bits: int, v1: bool = True) -> np.ndarray:
    """``(in, out)`` float: ``(q[i, o] - zero[g_idx[i], o]) * scale[g_idx[i], o]`` element by
    element from the packed words (zeros + 1 for the v1 format)."""
    k = 32 // bits
    qw, qz, sc, gi = t["qweight"], t["qzeros"], t["scales"].astype(np.float32), t["g_idx"]
    n_in, n_out = qw.shape[0] * k, qw.shape[1]
    w = np.zeros((n_in, n_out), np.float32)
    for i in range(n_in):
        g = gi[i]
        for o in range(n_out):
            q = ref_unpack_word(qw[i // k, o], bits, i % k)
            z = ref_unpack_word(qz[g, o // k], bits, o % k) + (1 if v1 else 0)
            w[i, o] = (q - z) * sc[g, o]
    return w


def ref_dequant_awq(t: dict, group_size: int) -> np.ndarray:
    qw, qz, sc = t["qweight"], t["qzeros"], t["scales"].astype(np.float32)
    n_in, n_out = qw.shape[0], qw.shape[1] * 8
    w = np.zeros((n_in, n_out), np.float32)
    for i in range(n_in):
        for o in range(n_out):
            slot = AWQ_ORDER_DOC.index(o % 8)
            q = ref_unpack_word(qw[i, o // 8], 4, slot)
            z = ref_unpack_word(qz[i // group_size, o // 8], 4, slot)
            w[i, o] = (q - z) * sc[i // group_size, o]
    return w


def random_symmetric(rng, out: int, n_in: int, bits: int, groups: int):
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    q = rng.integers(lo, hi + 1, size=(out, n_in)).astype(np.int8)
    scales = rng.uniform(0.01, 0.1, size=(out, groups)).astype(np.float32)
    return q, scales


# --- our writer against the reference --------------------------------------------------------

@pytest.mark.parametrize("bits,group_size", [(4, 16), (4, -1), (8, 24)])
def test_gptq_tensors_match_the_reference_packing(bits, group_size):
    rng = np.random.default_rng(bits)
    out, n_in = 16, 48
    groups = 1 if group_size == -1 else -(-n_in // group_size)
    q, scales = random_symmetric(rng, out, n_in, bits, groups)
    g_idx = np.zeros(n_in, np.int32) if group_size == -1 else np.arange(n_in, dtype=np.int32) // group_size
    t = gptq_tensors(q, scales, bits, g_idx)
    zero = 2 ** (bits - 1)
    np.testing.assert_array_equal(t["qweight"], ref_pack_gptq_qweight((q.astype(np.int64) + zero).T, bits))
    # v1 stores zero - 1 (AutoGPTQ's convention; readers add 1 back)
    np.testing.assert_array_equal(t["qzeros"], ref_pack_along_out(np.full((groups, out), zero - 1), bits))
    assert t["scales"].dtype == np.float16 and t["scales"].shape == (groups, out)
    np.testing.assert_array_equal(t["g_idx"], g_idx)
    layer = GPTQLinear.from_quantized(q, scales, bits=bits, group_size=group_size)
    want = ref_dequant_gptq(t, bits)
    np.testing.assert_allclose(want, (q * scales.astype(np.float16).astype(np.float32)[:, g_idx]).T, rtol=1e-6)
    np.testing.assert_allclose(layer.dequantize_weight("float32").numpy(), want, rtol=1e-6)


def test_awq_tensors_match_the_reference_packing():
    rng = np.random.default_rng(7)
    out, n_in, gs = 24, 64, 16
    q, scales = random_symmetric(rng, out, n_in, 4, n_in // gs)
    t = awq_tensors(q, scales)
    np.testing.assert_array_equal(t["qweight"], ref_pack_along_out((q.astype(np.int64) + 8).T, 4, AWQ_ORDER_DOC))
    np.testing.assert_array_equal(t["qzeros"], ref_pack_along_out(np.full((n_in // gs, out), 8), 4, AWQ_ORDER_DOC))
    assert t["scales"].shape == (n_in // gs, out) and t["scales"].dtype == np.float16
    layer = AWQLinear.from_quantized(q, scales, group_size=gs)
    np.testing.assert_allclose(layer.dequantize_weight("float32").numpy(), ref_dequant_awq(t, gs), rtol=1e-6)


def test_layouts_refuse_shapes_they_cannot_hold():
    with pytest.raises(PackedLayoutError, match="in_features = 20 is not a multiple of 8"):
        GPTQLinear(20, 16, bits=4)
    with pytest.raises(PackedLayoutError, match="4-bit only"):
        AWQLinear(32, 16, bits=8)
    with pytest.raises(PackedLayoutError, match="not a multiple of group_size = 64"):
        AWQLinear(96, 16, group_size=64)


def test_saved_checkpoint_dequantizes_to_the_in_memory_model(tiny_calibration, tmp_path):
    """The tensors of a saved GPTQ / AWQ checkpoint, unpacked by the reference, are the
    weights the quantized model computes with."""
    for quant_type, opts in (("gptq", {"group_size": 32, "act_order": True}), ("awq", {"group_size": 32})):
        model = quantize_model(load_demo(), quant_type, tiny_calibration, opts)
        out = tmp_path / quant_type
        model.save_pretrained(str(out))
        name = "model.layers.1.self_attn.k_proj"  # 128 -> 64, with a bias
        with CheckpointReader(out) as reader:
            t = {k: reader.get_numpy(f"{name}.{k}") for k in ("qweight", "qzeros", "scales", "g_idx")
                 if f"{name}.{k}" in reader}
        want = ref_dequant_gptq(t, 4) if quant_type == "gptq" else ref_dequant_awq(t, 32)
        layer = model.model.layers[1].self_attn.k_proj
        np.testing.assert_allclose(layer.dequantize_weight("float32").numpy(), want, rtol=1e-6)


# --- loading checkpoints written by "another tool" --------------------------------------------

def _asymmetric_gptq(rng, w_in_out: np.ndarray, bits: int, group_size: int, desc_act: bool):
    """Asymmetric min/max quantization per group with (for desc_act) a permuted g_idx, packed
    by the reference; returns the tensors and the weight they stand for."""
    n_in, n_out = w_in_out.shape
    maxq = 2**bits - 1
    groups = -(-n_in // group_size)
    g_idx = np.arange(n_in) // group_size
    if desc_act:  # act-order checkpoints assign groups in permuted order
        perm = rng.permutation(n_in)
        g_idx = np.empty(n_in, np.int64)
        g_idx[perm] = np.arange(n_in) // group_size
    scales = np.zeros((groups, n_out), np.float32)
    zeros = np.zeros((groups, n_out), np.int64)
    for g in range(groups):
        rows = w_in_out[g_idx == g]
        lo, hi = np.minimum(rows.min(axis=0), 0), np.maximum(rows.max(axis=0), 0)
        scales[g] = np.where(hi > lo, (hi - lo) / maxq, 1.0)
        # zero >= 1: v1 cannot store zero 0 (zero - 1 = -1 spills into the other slots)
        zeros[g] = np.clip(np.rint(-lo / scales[g]), 1, maxq)
    scales = scales.astype(np.float16).astype(np.float32)
    q = np.clip(np.rint(w_in_out / scales[g_idx]) + zeros[g_idx], 0, maxq).astype(np.int64)
    t = {"qweight": ref_pack_gptq_qweight(q, bits),
         "qzeros": ref_pack_along_out(zeros - 1, bits),  # v1: zero - 1
         "scales": scales.astype(np.float16), "g_idx": g_idx.astype(np.int32)}
    return t, ((q - zeros[g_idx]) * scales[g_idx]).astype(np.float32)


def _asymmetric_awq(w_in_out: np.ndarray, group_size: int):
    n_in, n_out = w_in_out.shape
    g_idx = np.arange(n_in) // group_size
    wg = w_in_out.reshape(n_in // group_size, group_size, n_out)
    lo, hi = wg.min(axis=1), wg.max(axis=1)
    scales = (np.where(hi > lo, (hi - lo) / 15, 1.0)).astype(np.float16).astype(np.float32)
    zeros = np.clip(np.rint(-lo / scales), 0, 15).astype(np.int64)
    q = np.clip(np.rint(w_in_out / scales[g_idx]) + zeros[g_idx], 0, 15).astype(np.int64)
    t = {"qweight": ref_pack_along_out(q, 4, AWQ_ORDER_DOC), "qzeros": ref_pack_along_out(zeros, 4, AWQ_ORDER_DOC),
         "scales": scales.astype(np.float16)}
    return t, ((q - zeros[g_idx]) * scales[g_idx]).astype(np.float32)


@pytest.mark.parametrize("kind", ["gptq-desc_act", "gptq-8bit", "awq"])
def test_loads_a_checkpoint_of_another_tool_with_equal_weights(kind, tmp_path):
    """A Qwen2 checkpoint quantized elsewhere (asymmetric zero points, act-order g_idx, its
    own quantization_config without our keys, lm_head left in float) loads with the weights
    the format defines, and computes what a float model with those weights computes."""
    rng = np.random.default_rng(0)
    float_model = load_demo()
    hf = json.loads((DEMO / "config.json").read_text())
    with CheckpointReader(DEMO) as reader:
        state = {k: reader.get_numpy(k) for k in reader.keys()}
    bits = 8 if kind == "gptq-8bit" else 4
    if kind == "awq":
        hf["quantization_config"] = {"quant_method": "awq", "version": "gemm", "bits": 4,
                                     "group_size": 32, "zero_point": True}
    else:
        hf["quantization_config"] = {"quant_method": "gptq", "bits": bits, "group_size": 32,
                                     "desc_act": kind == "gptq-desc_act", "sym": False,
                                     "checkpoint_format": "gptq"}
    expected = {}
    for key in list(state):
        if not (key.startswith("model.layers.") and key.endswith("proj.weight")):
            continue
        name = key[: -len(".weight")]
        w = state.pop(key).T.astype(np.float32)  # (in, out)
        if kind == "awq":
            t, deq = _asymmetric_awq(w, 32)
        else:
            t, deq = _asymmetric_gptq(rng, w, bits, 32, kind == "gptq-desc_act")
        state.update({f"{name}.{k}": v for k, v in t.items()})
        expected[name] = deq
    save_state_dict(state, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf))
    model = paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert model.quantization_config["quant_type"] == kind.split("-")[0]
    layers = dict(model.named_sublayers())
    float_layers = dict(float_model.named_sublayers())
    for name, deq in expected.items():
        np.testing.assert_allclose(layers[name].dequantize_weight("float32").numpy(), deq, rtol=1e-6, atol=1e-7)
        float_layers[name].weight.set_value(paddle.to_tensor(deq))
    ids = paddle.to_tensor(np.array([[3, 50, 7, 200, 11, 9]], dtype="int64"))
    np.testing.assert_allclose(model(ids).numpy(), float_model(ids).numpy(), rtol=1e-5, atol=1e-5)
    out = tmp_path / "resaved"  # and what we load, we save in the same layout
    model.save_pretrained(str(out))
    with CheckpointReader(out) as reader, CheckpointReader(tmp_path) as orig:
        name = "model.layers.0.mlp.down_proj"
        for k in ("qweight", "qzeros", "scales"):
            np.testing.assert_array_equal(reader.get_numpy(f"{name}.{k}"), orig.get_numpy(f"{name}.{k}"))


def test_layers_the_layout_cannot_hold_stay_float_and_are_listed(tiny_calibration, tmp_path):
    """AWQ's default group_size 128 does not divide down_proj's 352 inputs: those layers stay
    float, named in a warning and in modules_to_not_convert (which transformers/vLLM honour)."""
    from paddlellm_quant.calibration import QuantizationWarning

    with pytest.warns(QuantizationWarning, match=r"awq: 4 layer\(s\) kept in float.*model.layers.0.mlp.down_proj"):
        model = quantize_model(load_demo(), "awq", tiny_calibration)
    qc = model.quantization_config
    assert qc["group_size"] == 128 and "model.layers.3.mlp.down_proj" in qc["modules_to_not_convert"]
    model.save_pretrained(str(tmp_path))
    loaded = paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path)
    assert isinstance(loaded.model.layers[0].mlp.down_proj, paddle.nn.Linear)
    assert isinstance(loaded.model.layers[0].mlp.up_proj, AWQLinear)
    ids = paddle.to_tensor(np.array([[3, 50, 7, 200, 11, 9]], dtype="int64"))
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


def test_a_foreign_layout_under_one_of_our_names_is_refused(tmp_path):
    """transformers' fine-grained FP8 checkpoints say quant_method "fp8" (our quantizer's
    name): without our quant_type they are refused by name, not misread."""
    hf = json.loads((DEMO / "config.json").read_text())
    hf["quantization_config"] = {"quant_method": "fp8", "weight_block_size": [128, 128]}
    (tmp_path / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"quant_method 'fp8' but no quant_type: a checkpoint of another tool"):
        paddlellm.AutoModelForCausalLM.from_pretrained(tmp_path)
