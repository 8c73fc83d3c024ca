"""FP8 e4m3: rounding against a reference written from the format definition, the FP8 layer
against NumPy, quality and memory on the demo model, checkpoint round trip."""
from __future__ import annotations

import json

import numpy as np
import paddle
import pytest

from paddlellm import AutoModelForCausalLM, AutoTokenizer
from paddlellm.modeling.auto import quantize_model
from paddlellm_quant.calibration import batches, demo_texts, encode_texts, token_blocks
from paddlellm_quant.fp8 import E4M3_MAX, FP8Linear, to_e4m3
from paddlellm_quant.layers import weight_bytes
from paddlellm_quant.ppl import perplexity

DEMO = "core/paddlellm/assets/qwen-demo"


def e4m3_values() -> np.ndarray:
    """The 127 non-negative finite e4m3fn values by code 0x00..0x7E (ascending): 1 sign bit,
    4 exponent bits (bias 7), 3 mantissa bits; exponent 0 is subnormal (m/8 * 2**-6); code
    0x7F (exponent 15, mantissa 7) is NaN and there is no infinity."""
    vals = []
    for code in range(0x7F):
        e, m = code >> 3, code & 7
        vals.append(m / 8 * 2.0 ** -6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))
    return np.array(vals)


def e4m3_reference(x: np.ndarray) -> np.ndarray:
    """Round to nearest e4m3fn value, ties to the even code (mantissa LSB 0), saturating."""
    table = e4m3_values()
    a = np.minimum(np.abs(x.astype(np.float64)), E4M3_MAX)
    hi = np.clip(np.searchsorted(table, a), 1, len(table) - 1)  # table[hi-1] <= a <= table[hi]
    lo = hi - 1
    dlo, dhi = a - table[lo], table[hi] - a
    pick = np.where(dlo < dhi, lo, np.where(dhi < dlo, hi, np.where(lo % 2 == 0, lo, hi)))
    return np.sign(x) * table[pick]


def test_reference_table_is_e4m3fn():
    t = e4m3_values()
    assert t[-1] == 448.0 and t[1] == 2.0 ** -9 and t[8] == 2.0 ** -6 and np.all(np.diff(t) > 0)


def test_to_e4m3_rounds_exactly_like_the_format_definition():
    t = e4m3_values()
    mids = (t[:-1] + t[1:]) / 2  # exact ties: must go to the even code
    eps = np.nextafter(mids.astype(np.float32), np.float32(np.inf)) - mids.astype(np.float32)
    rng = np.random.default_rng(0)
    rand = np.exp2(rng.uniform(-12, 9.5, 4000)) * rng.choice([-1, 1], 4000)
    x = np.concatenate([t, -t, mids, -mids, mids + eps, mids - eps, rand,
                        [449.0, 464.0, 479.0, 480.0, 1e6, -1e6, 2.0 ** -11]]).astype(np.float32)
    got = to_e4m3(paddle.to_tensor(x))
    assert got.dtype == paddle.float8_e4m3fn
    np.testing.assert_array_equal(got.astype("float32").numpy(), e4m3_reference(x).astype(np.float32))


def test_fp8_linear_matches_numpy_reference():
    rng = np.random.default_rng(1)
    lin = paddle.nn.Linear(40, 12)
    lin.weight.set_value(paddle.to_tensor(rng.normal(size=(40, 12)).astype(np.float32)))
    x = rng.normal(size=(3, 7, 40)).astype(np.float32) * 3
    absmax = float(np.abs(x).max())
    layer = FP8Linear.from_linear(lin, absmax)
    assert layer.qweight.dtype == paddle.float8_e4m3fn and tuple(layer.qweight.shape) == (12, 40)
    w = lin.weight.numpy()  # (in, out)
    ws = (np.abs(w).max(axis=0) / 448).astype(np.float32)
    wq = e4m3_reference((w / ws).astype(np.float32))
    a = np.float32(absmax / 448)
    xq = e4m3_reference((x / a).astype(np.float32))
    ref = (xq.reshape(-1, 40) @ wq) * (a * ws) + lin.bias.numpy()
    got = layer(paddle.to_tensor(x)).numpy().reshape(-1, 12)
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=2e-5)
    exact = x.reshape(-1, 40) @ w + lin.bias.numpy()
    assert np.abs(got - exact).max() < 0.1 * np.abs(exact).max()


@pytest.fixture(scope="module")
def data():
    tok = AutoTokenizer.from_pretrained(DEMO)
    calib = batches(token_blocks(encode_texts(tok, demo_texts(48, "train", seed=1)), 64), 4)
    held = encode_texts(tok, demo_texts(48, "eval", seed=2))
    return calib, held


def test_fp8_quality_memory_and_round_trip(data, tmp_path):
    calib, held = data
    base = AutoModelForCausalLM.from_pretrained(DEMO)
    model = quantize_model(AutoModelForCausalLM.from_pretrained(DEMO), "fp8", calib)
    float_ppl, fp8_ppl = perplexity(base, held), perplexity(model, held)
    print(f"float {float_ppl:.4f}  fp8 {fp8_ppl:.4f}")
    assert fp8_ppl != float_ppl and abs(fp8_ppl / float_ppl - 1) < 0.01
    before, after = weight_bytes(base)["linear_layers"], weight_bytes(model)["linear_layers"]
    assert after < 0.27 * before  # 1 byte per weight + float32 scales vs 4 bytes
    model.save_pretrained(tmp_path)
    header_len = int.from_bytes((tmp_path / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "model.safetensors").read_bytes()[8:8 + header_len])
    assert header["model.layers.0.mlp.up_proj.qweight"]["dtype"] == "F8_E4M3"
    qc = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert qc["quant_type"] == "fp8" and "simulated" in qc["compute"]
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert loaded.model.layers[3].self_attn.o_proj.qweight.dtype == paddle.float8_e4m3fn
    ids = paddle.to_tensor([held[0] + held[2]])
    np.testing.assert_array_equal(loaded(ids).numpy(), model(ids).numpy())


def test_to_e4m3_matches_torch_float8(tmp_path):
    """Cross-check with ``torch.float8_e4m3fn`` in the dev env (skipped without it)."""
    import os
    import subprocess

    dev = os.environ.get("PADDLELLM_DEV_PYTHON")
    if not dev:
        pytest.skip("PADDLELLM_DEV_PYTHON not set")
    rng = np.random.default_rng(3)
    x = (np.exp2(rng.uniform(-12, 8.7, 3000)) * rng.choice([-1, 1], 3000)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, torch, sys; x = torch.from_numpy(np.load(sys.argv[1])); "
            "np.save(sys.argv[2], x.to(torch.float8_e4m3fn).float().numpy())")
    subprocess.run([dev, "-c", code, str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], check=True)
    np.testing.assert_array_equal(to_e4m3(paddle.to_tensor(x)).astype("float32").numpy(),
                                  np.load(tmp_path / "y.npy"))
