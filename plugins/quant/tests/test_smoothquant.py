"""SmoothQuant A8W8: the smoothing math, the exact int8 GEMM, the α search, quality on the
demo model with activation outliers, and the checkpoint round trip."""
from __future__ import annotations

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.modeling.auto import quantize_model
from paddlellm_quant.a8w8 import A8W8Linear, int8_matmul
from paddlellm_quant.base import QuantizeError
from paddlellm_quant.calibration import batches, demo_texts, encode_texts, token_blocks
from paddlellm_quant.ppl import perplexity
from paddlellm_quant.smoothquant import a8w8_error, search_alpha, smoothing_factors

DEMO = "core/paddlellm/assets/qwen-demo"
OUTLIER_CHANNELS = [3, 17, 60, 101]


@pytest.fixture(scope="module")
def data():
    tok = AutoTokenizer.from_pretrained(DEMO)
    calib = batches(token_blocks(encode_texts(tok, demo_texts(48, "train", seed=1)), 64), 4)
    held = encode_texts(tok, demo_texts(48, "eval", seed=2))
    return calib, held


def inject_outliers(model, factor: float = 40.0):
    """Function-preserving: scale a few norm channels by ``factor`` and the matching weight
    rows of the linears they feed by ``1 / factor`` (the pattern of real LLM outliers)."""
    for layer in model.model.layers:
        pairs = [(layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj]),
                 (layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj])]
        for norm, linears in pairs:
            w = norm.weight.numpy().copy()
            w[OUTLIER_CHANNELS] *= factor
            norm.weight.set_value(paddle.to_tensor(w))
            for lin in linears:
                m = lin.weight.numpy().copy()  # (in, out)
                m[OUTLIER_CHANNELS] /= factor
                lin.weight.set_value(paddle.to_tensor(m))
    return model


def test_smoothing_factors_formula():
    act, w = np.array([8.0, 1.0, 0.0, 2.0]), np.array([0.5, 2.0, 1.0, 0.0])
    s = smoothing_factors(act, w, 0.5)
    assert s[0] == pytest.approx(8.0 ** 0.5 / 0.5 ** 0.5) and s[1] == pytest.approx(1.0 / 2.0 ** 0.5)
    assert s[2] == 1.0 and s[3] == 1.0  # dead channel / zero weights keep s = 1
    assert np.all(smoothing_factors(act, w, None) == 1.0)
    assert smoothing_factors(act, w, 1.0)[0] == pytest.approx(8.0)
    with pytest.raises(ValueError, match="smooth_alpha must be in"):
        smoothing_factors(act, w, 1.5)


def test_int8_matmul_is_exact_integer_arithmetic():
    rng = np.random.default_rng(0)
    # K = 4096 full-range int8: sums reach ~6.6e7 > 2**24, where float32 accumulation is inexact
    a = rng.integers(-127, 128, (8, 4096)).astype(np.int8)
    b = rng.integers(-127, 128, (16, 4096)).astype(np.int8)
    a[0], b[0] = 127, 127  # the extreme sum 4096 * 127**2 = 66,064,384
    got = int8_matmul(paddle.to_tensor(a), paddle.to_tensor(b)).numpy()
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, a.astype(np.int64) @ b.astype(np.int64).T)


def test_a8w8_linear_matches_numpy_reference():
    rng = np.random.default_rng(1)
    lin = paddle.nn.Linear(48, 24)
    lin.weight.set_value(paddle.to_tensor(rng.normal(size=(48, 24)).astype(np.float32)))
    lin.bias.set_value(paddle.to_tensor(rng.normal(size=24).astype(np.float32)))
    x = rng.normal(size=(2, 5, 48)).astype(np.float32)
    s = rng.uniform(0.5, 2.0, 48).astype(np.float32)
    absmax = float(np.abs(x / s).max())
    layer = A8W8Linear.from_linear(lin, absmax, paddle.to_tensor(s))
    assert layer.qweight.dtype == paddle.int8 and tuple(layer.qweight.shape) == (24, 48)
    # reference: quantize both operands in numpy, integer matmul in int64, dequantize
    w = lin.weight.numpy() * s[:, None]  # (in, out)
    ws = np.abs(w).max(axis=0) / 127
    wq = np.clip(np.round(w / ws), -127, 127).astype(np.int64)
    a = np.float32(absmax / 127)
    xq = np.clip(np.round(x.reshape(-1, 48) / (s * a)), -127, 127).astype(np.int64)
    ref = (xq @ wq).astype(np.float32) * (a * ws.astype(np.float32)) + lin.bias.numpy()
    got = layer(paddle.to_tensor(x)).numpy().reshape(-1, 24)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
    # and it approximates the float layer
    exact = x.reshape(-1, 48) @ lin.weight.numpy() + lin.bias.numpy()
    assert np.abs(got - exact).max() < 0.05 * np.abs(exact).max()


def test_smoothing_reduces_error_on_layer_with_outlier_channels():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(256, 64))
    x[:, [5, 40]] *= 60.0  # two outlier channels
    w = rng.normal(size=(64, 32)) * 0.05
    amax = np.abs(x).max(axis=0)
    plain = a8w8_error(x, w, np.ones(64), amax)
    half = a8w8_error(x, w, smoothing_factors(amax, np.abs(w).max(axis=1), 0.5), amax)
    best, errors = search_alpha(x, w, amax)
    assert half < plain / 5
    assert errors[best] == min(errors.values()) and errors[best] <= half
    assert best is not None and 0.0 <= best <= 1.0


def test_smoothquant_beats_plain_a8w8_on_demo_model_with_outliers(data):
    calib, held = data
    float_ppl = perplexity(inject_outliers(AutoModelForCausalLM.from_pretrained(DEMO)), held)
    plain = quantize_model(inject_outliers(AutoModelForCausalLM.from_pretrained(DEMO)), "a8w8", calib,
                           {"smooth": False})
    smooth = quantize_model(inject_outliers(AutoModelForCausalLM.from_pretrained(DEMO)), "a8w8", calib,
                            {"calibration_rows": 256})
    plain_ppl, smooth_ppl = perplexity(plain, held), perplexity(smooth, held)
    alphas = smooth.quantization_report["alphas"]
    print(f"float {float_ppl:.4f}  plain a8w8 {plain_ppl:.4f}  smoothquant {smooth_ppl:.4f}  alphas {alphas}")
    assert plain_ppl > float_ppl * 1.03  # the outliers hurt plain per-tensor int8 activations
    assert abs(smooth_ppl - float_ppl) < 0.2 * abs(plain_ppl - float_ppl)
    assert abs(smooth_ppl / float_ppl - 1) < 0.01
    assert all(a is not None for k, a in alphas.items() if k.endswith(("q_proj", "gate_proj")))


def test_a8w8_checkpoint_round_trip(data, tmp_path):
    calib, held = data
    model = quantize_model(AutoModelForCausalLM.from_pretrained(DEMO), "a8w8", calib,
                           {"smooth_search": False, "smooth_alpha": 0.6})
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    qc = loaded.quantization_config
    assert qc["quant_type"] == "a8w8" and qc["smooth_alpha"] == 0.6 and qc["kv_cache_quant"] == "none"
    q = loaded.model.layers[1].mlp.down_proj
    assert isinstance(q, A8W8Linear) and q.qweight.dtype == paddle.int8
    np.testing.assert_array_equal(q.smooth_scale.numpy(), model.model.layers[1].mlp.down_proj.smooth_scale.numpy())
    assert not np.all(q.smooth_scale.numpy() == 1.0)  # o_proj/down_proj keep s in the layer
    ids = paddle.to_tensor([held[0] + held[1]])
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


def test_options_are_validated(data):
    calib, _ = data
    model = AutoModelForCausalLM.from_pretrained(DEMO)
    with pytest.raises(QuantizeError, match="unknown option.*smooth_alfa.*valid: .*smooth_alpha"):
        quantize_model(model, "a8w8", calib, {"smooth_alfa": 0.5})
    with pytest.raises(QuantizeError, match="smooth_alpha"):
        quantize_model(model, "a8w8", calib, {"smooth_alpha": 2.0})
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_model(model, "a8w8", None)


@pytest.mark.parametrize("quant_type", ["a8w8", "a8w8c8", "fp8"])
def test_llm_quantize_command(tmp_path, quant_type):
    """``llm quantize --quant_type T --calibration_data FILE --output_dir OUT`` (in process,
    config-file form for a8w8c8): perplexity before/after printed, OUT loads back."""
    import json

    from paddlellm.data.demo import demo_examples
    from paddlellm_quant.cli import run_quantize_cli

    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join(json.dumps({"src": e["src"], "tgt": e["tgt"]}) + "\n"
                             for e in demo_examples(40, split="train", seed=4)))
    out = tmp_path / "out"
    flags = {"quant_type": quant_type, "calibration_data": str(calib), "output_dir": str(out),
             "nsamples": 8, "seqlen": 32, "max_eval_samples": 16}
    if quant_type == "a8w8c8":
        (tmp_path / "quant.json").write_text(json.dumps({**flags, "smooth_alpha": 0.7, "smooth_search": False}))
        argv = ["--config", str(tmp_path / "quant.json")]
    else:
        argv = [a for k, v in flags.items() for a in (f"--{k}", str(v))]
    logs: list[str] = []
    report = run_quantize_cli(argv, log=logs.append)
    text = "\n".join(logs)
    assert "perplexity before (float32)" in text and f"perplexity after ({quant_type})" in text
    assert abs(report["ppl_after"] / report["ppl_before"] - 1) < 0.02
    assert ("SIMULATED" in text) == (quant_type == "fp8")
    assert ("KV cache: int8 static" in text) == (quant_type == "a8w8c8")
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_type"] == quant_type
    if quant_type == "a8w8c8":
        assert qc["smooth_alpha"] == 0.7 and "SmoothQuant α (fixed)" in text
    loaded = AutoModelForCausalLM.from_pretrained(out)
    ids = paddle.to_tensor([[5, 9, 30, 41, 7, 2]])
    assert np.isfinite(loaded(ids).numpy()).all()


class _SmoothedFloat(paddle.nn.Layer):
    """A float stand-in for a quantized layer: ``(x / s) (diag(s) W) + b``."""

    def __init__(self, linear, act_absmax, smooth_scale):
        super().__init__()
        self.linear, self.s = linear, smooth_scale

    def forward(self, x):
        if self.s is None:
            return self.linear(x)
        y = paddle.matmul(x / self.s, self.linear.weight * self.s.unsqueeze(-1))
        return y if self.linear.bias is None else y + self.linear.bias


@pytest.mark.parametrize("preset,overrides", [
    ("qwen-tiny", {}), ("mixtral-tiny", {}), ("gemma-tiny", {}), ("bloom-tiny", {}),
    ("opt-tiny", {"do_layer_norm_before": False}),  # post-norm: nothing to fold into
])
def test_smoothing_preserves_the_function_in_every_family(preset, overrides):
    """Folding s into RMSNorm / (1 + w) RMSNorm / LayerNorm with bias, or into the layer
    (post-norm, o_proj, down_proj, MoE experts), leaves the float model's logits unchanged."""
    from paddlellm_quant.smoothquant import quantize_static

    paddle.seed(0)
    model = AutoModelForCausalLM.from_config(preset, vocab_size=97, **overrides)
    model.eval()
    ids = paddle.to_tensor(np.random.default_rng(0).integers(0, 97, (2, 12)))
    ref = model(ids).numpy()
    report = quantize_static(model, [ids], _SmoothedFloat, smooth=True, alpha=0.5, search=False)
    assert all(a == 0.5 for a in report["alphas"].values())
    np.testing.assert_allclose(model(ids).numpy(), ref, atol=2e-6)
    if preset == "mixtral-tiny":  # the real thing runs on MoE experts too
        paddle.seed(0)
        moe = AutoModelForCausalLM.from_config(preset, vocab_size=97)
        moe.eval()
        quantize_model(moe, "a8w8", [ids])
        out = moe(ids).numpy()
        assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()


def test_trainable_input_gets_straight_through_gradients():
    """Under a trainable adapter (QLoRA hook) the frozen A8W8/FP8 base passes gradients to
    its input (straight-through estimator) and computes the same outputs."""
    from paddlellm_quant.fp8 import FP8Linear

    rng = np.random.default_rng(5)
    lin = paddle.nn.Linear(32, 16)
    x = rng.normal(size=(6, 32)).astype(np.float32)
    g = rng.normal(size=(6, 16)).astype(np.float32)
    for layer in (A8W8Linear.from_linear(lin, float(np.abs(x).max()), paddle.to_tensor(rng.uniform(0.5, 2, 32).astype(np.float32))),
                  FP8Linear.from_linear(lin, float(np.abs(x).max()))):
        with paddle.no_grad():
            frozen = layer(paddle.to_tensor(x)).numpy()
        xt = paddle.to_tensor(x, stop_gradient=False)
        y = layer(xt)
        np.testing.assert_allclose(y.numpy(), frozen, rtol=1e-5, atol=1e-5)
        (y * paddle.to_tensor(g)).sum().backward()
        np.testing.assert_allclose(xt.grad.numpy(), g @ layer.dequantized_weight().numpy().T, rtol=1e-4, atol=1e-5)
