"""Calibration safeguards: short calibration data is reported, and no layer comes out worse
than round-to-nearest on its own calibration data."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm.modeling.auto import quantize_model
from paddlellm_quant.calibration import CalibrationWarning, run_capture, token_blocks
from paddlellm_quant.cli import run_quantize_cli
from paddlellm_quant.gptq import HessianAccumulator, gptq_or_rtn
from paddlellm_quant.layers import dequantize_numpy, rtn_quantize
from quant_testutil import load_demo


def error(x, w, wq) -> float:
    """``||x W^T - x Wq^T||^2`` summed, from the inputs themselves (not from H)."""
    d = x.astype(np.float64) @ (w - wq).T.astype(np.float64)
    return float((d * d).sum())


def test_cutting_fewer_blocks_than_requested_warns_with_the_numbers():
    with pytest.warns(CalibrationWarning, match=r"only 4 of the 8 requested calibration blocks of 128 "
                                                r"tokens could be cut from 600 tokens"):
        blocks = token_blocks([list(range(600))], 128, nsamples=8)
    assert blocks.shape == (4, 128)


def test_gptq_falls_back_to_rtn_where_it_loses_on_the_calibration_data():
    """Heavy-tailed weights, 5 calibration tokens: GPTQ's error feedback pushes weights past
    the per-channel grid and it loses to plain rounding on its own calibration data."""
    rng = np.random.default_rng(246)
    w = rng.standard_t(2, size=(16, 32)).astype(np.float32)
    n = int(rng.integers(1, 6))
    x = (rng.normal(size=(n, 32)) * rng.uniform(0.1, 5, size=32)).astype(np.float32)
    acc = HessianAccumulator(32)
    acc.add(x)
    q, scales, info = gptq_or_rtn(w, acc.H, bits=4, group_size=-1)
    q_rtn, s_rtn = rtn_quantize(w, 4, -1)
    rtn_err = error(x, w, dequantize_numpy(q_rtn, s_rtn, -1))
    assert info["method"] == "rtn" and info["gptq_loss"] > info["rtn_loss"]
    assert info["rtn_loss"] == pytest.approx(rtn_err / n, rel=1e-6)  # the loss is the mean error
    np.testing.assert_array_equal(q, q_rtn)


def test_gptq_with_a_tiny_calibration_set_warns_and_never_loses_to_rtn(tokenizer):
    """32 tokens of calibration text for a model whose widest layer reads 352 channels."""
    ids = np.array([tokenizer.encode("The quick brown fox jumps over the lazy dog, twice.")[:16]] * 2)
    calibration = [ids]
    with pytest.warns(CalibrationWarning, match=r"gptq: 32 calibration tokens, fewer than the 2048"):
        model = quantize_model(load_demo(), "gptq", calibration, {"group_size": 32})
    fallback = model.quantization_config["meta"]["rtn_fallback"]
    assert isinstance(fallback, list)
    # Independent check on the layers whose calibration inputs can be recomputed from the
    # result: q/k/v read the (unchanged) input norm of each block, fed by the quantized blocks
    # before it, as during calibration.
    float_model = load_demo()
    float_w = {n: l.weight.numpy().T for n, l in float_model.named_sublayers()
               if isinstance(l, paddle.nn.Linear)}
    layers = {n: l for n, l in model.named_sublayers()
              if n.split(".")[-1] in ("q_proj", "k_proj", "v_proj")}
    inputs: dict[str, list] = {n: [] for n in layers}
    run_capture(model, calibration, layers, lambda n, x: inputs[n].append(x))
    for name, layer in layers.items():
        x = np.concatenate(inputs[name])
        w = float_w[name]
        wq = layer.dequantize_weight("float32").numpy().T
        q_rtn, s_rtn = rtn_quantize(w, 4, 32)
        rtn = error(x, w, dequantize_numpy(q_rtn, s_rtn, 32))
        # float16 scales in the layout: a relative 1e-3 allowance
        assert error(x, w, wq) <= rtn * (1 + 1e-3), name


def test_llm_quantize_prints_the_warnings(tmp_path):
    calib = tmp_path / "calib.txt"
    calib.write_text("A short calibration text.\nAnother line of it.\n")
    lines: list[str] = []
    report = run_quantize_cli(["--quant_type", "gptq", "--output_dir", str(tmp_path / "out"),
                               "--calibration_data", str(calib), "--seqlen", "8",
                               "--nsamples", "16", "--skip_eval", "true"], log=lines.append)
    text = "\n".join(lines)
    assert "warning: only" in text and "of the 16 requested calibration blocks of 8 tokens" in text
    assert "warning: gptq:" in text and "calibration tokens, fewer than the 2048" in text
    assert len(report["warnings"]) >= 2
