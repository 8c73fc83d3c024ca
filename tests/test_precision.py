"""bfloat16/float16 checkpoints on CPU: low-precision weight storage, float32 compute."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import paddle
import pytest

import paddlellm
from paddlellm import AutoModelForCausalLM

DEMO = Path(paddlellm.__file__).parent / "assets" / "qwen-demo"


def _logits(model, ids):
    with paddle.no_grad():
        return model(paddle.to_tensor(ids)).astype("float32").numpy()


@pytest.mark.parametrize("source", ["demo", "llama-tiny", "mixtral-tiny", "gpt-tiny"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_checkpoint_runs_on_cpu_close_to_float32(tmp_path, source, dtype):
    if source == "demo":
        path = DEMO
    else:
        paddle.seed(0)
        AutoModelForCausalLM.from_config(source).save_pretrained(str(tmp_path / "m"))
        path = tmp_path / "m"
    ids = np.random.default_rng(0).integers(0, 100, size=(2, 12))
    ref = _logits(AutoModelForCausalLM.from_pretrained(path), ids)
    low = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    got = _logits(low, ids)
    assert np.abs(got - ref).max() <= 1e-2 * max(1.0, np.abs(ref).max())
    weights = {str(p.dtype).replace("paddle.", "") for p in low.parameters() if p.ndim == 2}
    assert weights == {dtype}  # the matrices stay in low precision: half the memory
    assert low.dtype == "float32"
    low.save_pretrained(str(tmp_path / "again"))
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again")
    import json

    assert json.loads((tmp_path / "again" / "config.json").read_text())["torch_dtype"] == dtype
    np.testing.assert_allclose(_logits(again, ids), got, atol=1e-5, rtol=1e-5)


def test_engine_generates_from_bfloat16_checkpoint():
    from paddlellm.engine import LLMEngine, SamplingParams

    params = SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
    out = LLMEngine.from_pretrained(str(DEMO), dtype="bfloat16").generate([[5, 6, 7, 8, 9]], params)
    assert len(out[0]["token_ids"]) == 4 and out[0]["finish_reason"] == "length"


def test_paddlenlp_from_pretrained_arguments():
    """PaddleNLP's `from_pretrained(path, convert_from_torch=True, dtype="float16")` works."""
    model = AutoModelForCausalLM.from_pretrained(DEMO, convert_from_torch=True, dtype="float16")
    assert model.storage_dtype == "float16"
    assert np.isfinite(_logits(model, np.array([[1, 2, 3]]))).all()
