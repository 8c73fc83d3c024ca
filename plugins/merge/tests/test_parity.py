"""The automatic parity summary printed after a merge."""
from __future__ import annotations

import numpy as np
import pytest

from merge_testutil import fx
from paddlellm_merge.cli import run_merge_cli
from paddlellm_merge.parity import parity_summary, top1_agreement


def test_top1_agreement():
    assert top1_agreement(np.array([1, 2, 3, 4]), np.array([1, 0, 3, 0])) == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        top1_agreement(np.zeros(3), np.zeros(4))


def test_summary_with_a_stub_model(tmp_path):
    """The bookkeeping, with a deterministic stand-in for the model forward."""
    import shutil

    out_dir = tmp_path / "merged"
    out_dir.mkdir()
    shutil.copy(fx("m1", "config.json"), out_dir / "config.json")  # parity reads vocab_size
    token = {str(out_dir): 0, fx("m1"): 0, fx("m2"): 1}

    def top1(path, ids):  # every model predicts its own token, and 7 at the last position
        return [np.array([token[path]] * (len(seq) - 1) + [7]) for seq in ids]

    lines = []
    out = parity_summary(str(out_dir), [fx("m1"), fx("m2")], log=lines.append, top1_fn=top1)
    assert out[fx("m1")] == 1.0
    assert out[fx("m2")] == pytest.approx(1 / 12)  # 12 pseudo-token prompts, last agrees
    assert lines[0].startswith("parity: top-1 agreement of the merged model over 4 prompts")
    assert lines[1].strip() == f"100.0%  {fx('m1')}"


def _paddle_models_available() -> bool:
    try:
        from paddlellm.api import AutoModelForCausalLM
        from paddlellm.modeling.auto import family_for_model_type

        family_for_model_type("qwen2")
        return AutoModelForCausalLM is not None
    except Exception:
        return False


@pytest.mark.skipif(not _paddle_models_available(), reason="paddlellm-models (qwen2) not installed")
def test_summary_after_cli_merge_with_paddle_models(tmp_path):
    """A linear merge weighting m1 fully must agree with m1 at every position."""
    lines = []
    run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--weight_list", "1", "0",
                   "--output_path", str(tmp_path / "o")], log=lines.append)
    text = "\n".join(lines)
    assert "parity: top-1 agreement of the merged model over 4 prompts" in text, text
    row = [l for l in lines if l.rstrip().endswith(fx("m1"))][0]
    assert row.strip().startswith("100.0%"), text


def test_parity_can_be_disabled(tmp_path):
    lines = []
    run_merge_cli(["--model_path_list", fx("m1"), fx("m2"), "--output_path", str(tmp_path / "o"),
                   "--no-parity"], log=lines.append)
    assert not any(l.startswith("parity") for l in lines)
