"""Dev-only: GPTQ/AWQ checkpoints against PyTorch packing/dequantization written from the
AutoGPTQ/AutoAWQ sources, and transformers' Qwen2 on the dequantized weights
(scripts/fixtures/make_quant_fixtures.py, run once for the module; skipped without
``PADDLELLM_DEV_PYTHON``)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import paddle
import pytest

import paddlellm
from paddlellm.modeling.auto import quantize_model
from paddlellm.checkpoint import CheckpointReader
from quant_testutil import load_demo

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "fixtures" / "make_quant_fixtures.py"
DEV_PYTHON = os.environ.get("PADDLELLM_DEV_PYTHON", "")
IDS = np.array([[3, 50, 7, 200, 11, 9, 1, 2], [5, 4, 3, 2, 1, 0, 8, 13]], dtype="int64")
OURS = {"gptq": {"group_size": 32, "act_order": True}, "awq": {"group_size": 32}}


def dev_python() -> str:
    if not DEV_PYTHON or not Path(DEV_PYTHON).exists():
        pytest.skip("no dev python with torch + transformers (set PADDLELLM_DEV_PYTHON)")
    probe = subprocess.run([DEV_PYTHON, "-c", "import torch, transformers, safetensors"], capture_output=True)
    if probe.returncode:
        pytest.skip(f"torch/transformers/safetensors missing at {DEV_PYTHON}")
    return DEV_PYTHON


def read(path: Path) -> dict[str, np.ndarray]:
    with CheckpointReader(path) as reader:
        return {k: reader.get_numpy(k) for k in reader.keys()}


@pytest.fixture(scope="module")
def interop(tmp_path_factory, tiny_calibration):
    """One script run: the tools' checkpoints (``make``) and their reading of ours (``check``)."""
    python = dev_python()
    out = tmp_path_factory.mktemp("quant_interop")
    models, args = {}, ["make", str(out / "tools")]
    for quant_type, opts in OURS.items():
        models[quant_type] = quantize_model(load_demo(), quant_type, tiny_calibration, opts)
        models[quant_type].save_pretrained(str(out / quant_type))
        args += ["check", str(out / quant_type), str(out / f"{quant_type}.safetensors")]
    proc = subprocess.run([python, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, models


@pytest.mark.parametrize("kind", ["gptq", "gptq8", "awq"])
def test_checkpoints_packed_by_the_tools_code_load_with_equal_weights(kind, interop):
    out, _ = interop
    expected = read(out / "tools" / "expected.safetensors")
    model = paddlellm.AutoModelForCausalLM.from_pretrained(out / "tools" / kind)
    layers = dict(model.named_sublayers())
    names = [k[len(kind) + 1:] for k in expected if k.startswith(kind + ".")]
    assert len(names) == 2 * 7
    for name in names:
        np.testing.assert_allclose(layers[name].dequantize_weight("float32").numpy().T,
                                   expected[f"{kind}.{name}"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(model(paddle.to_tensor(IDS)).numpy(), expected[f"logits.{kind}"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quant_type", list(OURS))
def test_our_checkpoints_dequantize_in_the_tools_code(quant_type, interop):
    """What we write, the tools' dequantization reads as the weights we compute with, and
    transformers' model on those weights gives our logits."""
    out, models = interop
    model = models[quant_type]
    result = read(out / f"{quant_type}.safetensors")
    layers = dict(model.named_sublayers())
    weights = [k for k in result if k.startswith("weight.")]
    assert len(weights) == 4 * 7
    for key in weights:
        np.testing.assert_allclose(result[key], layers[key[len("weight."):]].dequantize_weight("float32").numpy().T,
                                   rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result["logits"], model(paddle.to_tensor(IDS)).numpy(), rtol=1e-4, atol=1e-4)
