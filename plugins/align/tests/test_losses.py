"""Loss formulas against numbers computed by trl itself (scripts/fixtures/make_align_fixtures.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm_align.losses import DPO, KTO, DPOConfig, KTOConfig

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "trl_losses.json").read_text())
METRIC_TOL = dict(rtol=1e-5, atol=1e-6)


def tensors(data: dict) -> dict:
    out = {}
    for key, value in data.items():
        dtype = "bool" if key == "labels" else ("int64" if "lengths" in key else "float64")
        out[key] = paddle.to_tensor(np.asarray(value), dtype=dtype)
    return out


@pytest.mark.parametrize("case", FIXTURE["dpo"], ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c["options"].items()))
def test_pairwise_losses_match_trl(case):
    batch = tensors(FIXTURE["dpo_data"])
    loss, metrics = DPO(batch, DPOConfig(**case["options"]))
    np.testing.assert_allclose(float(loss), case["loss"], rtol=1e-6)
    for key, want in case.get("metrics", {}).items():
        np.testing.assert_allclose(metrics[key], want, **METRIC_TOL, err_msg=key)


@pytest.mark.parametrize("case", FIXTURE["kto"], ids=lambda c: f"kl={c['metrics']['kl']:.2f}-"
                         + "-".join(f"{k}={v}" for k, v in c["options"].items()))
def test_kto_matches_trl(case):
    loss, metrics = KTO(tensors(case["data"]), KTOConfig(**case["options"]))
    np.testing.assert_allclose(float(loss), case["loss"], rtol=1e-6)
    for key, want in case["metrics"].items():
        np.testing.assert_allclose(metrics[key], want, **METRIC_TOL, err_msg=key)


def test_kl_estimate_is_detached_and_clamped():
    data = {k: v for k, v in FIXTURE["kto"][0]["data"].items()}
    batch = tensors(data)
    batch["logps"].stop_gradient = False
    batch["kl_logps"].stop_gradient = False
    loss, _ = KTO(batch, KTOConfig())
    loss.backward()
    assert batch["kl_logps"].grad is None or float(batch["kl_logps"].grad.abs().sum()) == 0.0
    assert float(batch["logps"].grad.abs().sum()) > 0


def test_sft_and_pref_ratios_mix_the_terms():
    batch = tensors(FIXTURE["dpo_data"])
    pref, _ = DPO(batch, DPOConfig(beta=0.1))
    mixed, m = DPO(batch, DPOConfig(beta=0.1, sft_loss_ratio=0.5, pref_loss_ratio=2.0))
    np.testing.assert_allclose(float(mixed), 2 * float(pref) + 0.5 * FIXTURE["dpo_data"]["chosen_nll"],
                               rtol=1e-6)
    assert m["sft_loss"] == pytest.approx(FIXTURE["dpo_data"]["chosen_nll"])


def test_alias_sets_loss_type_and_conflicts_are_errors():
    from paddlellm.errors import ConfigError

    assert DPO.resolve(DPOConfig(), "simpo").loss_type == "simpo"
    assert not DPO.needs_reference_for(DPO.resolve(None, "orpo"))
    assert DPO.resolve(DPOConfig(loss_type="hinge"), "dpo").loss_type == "hinge"
    with pytest.raises(ConfigError, match="--align simpo conflicts with --loss_type ipo"):
        DPO.resolve(DPOConfig(loss_type="ipo"), "simpo")
