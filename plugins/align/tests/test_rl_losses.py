"""PPO, GRPO and Bradley–Terry formulas against numbers computed by trl
(scripts/fixtures/make_rl_fixtures.py writes fixtures/trl_rl.json)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from paddlellm_align.reward_model import RewardLossConfig, pairwise_reward_loss
from paddlellm_align.rl_losses import (GRPOConfig, PPOConfig, entropy_from_logits,
                                       group_advantages, grpo_loss, masked_whiten,
                                       ppo_advantages, ppo_loss)

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "trl_rl.json").read_text())
TOL = dict(rtol=1e-6, atol=1e-9)
METRIC_TOL = dict(rtol=1e-5, atol=1e-6)  # trl computes some metrics in float32


def t(value, dtype="float64"):
    return paddle.to_tensor(np.asarray(value), dtype=dtype)


def close(got, want, tol=TOL, name=""):
    got = got.numpy() if isinstance(got, paddle.Tensor) else got
    np.testing.assert_allclose(got, want, **tol, err_msg=name)


# --- reward model ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", FIXTURE["reward"]["cases"], ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c["options"].items()))
def test_bradley_terry_matches_trl(case):
    data = FIXTURE["reward"]
    margin = t(data["margin"]) if case["options"]["margin"] else None
    config = RewardLossConfig(center_rewards_coefficient=case["options"]["center_rewards_coefficient"])
    loss, metrics = pairwise_reward_loss(t(data["chosen"]), t(data["rejected"]), config,
                                         margin=margin)
    close(float(loss), case["loss"])
    for key, want in case["metrics"].items():
        close(metrics[key], want, METRIC_TOL, key)


# --- PPO ------------------------------------------------------------------------------------

PPO = FIXTURE["ppo"]


def ppo_inputs():
    d = PPO["data"]
    return {k: t(v, "int64" if "mask" in k else "float64") for k, v in d.items()}


@pytest.mark.parametrize("case", PPO["cases"], ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c["options"].items()) or "defaults")
def test_ppo_rollout_advantages_match_trl(case):
    d = ppo_inputs()
    config = PPOConfig(**case["options"])
    r = ppo_advantages(d["logprobs"], d["ref_logprobs"], d["values"], d["scores"], d["mask"],
                       config, value_mask=d["value_mask"])
    mask, vmask = d["mask"].numpy().astype(bool), d["value_mask"].numpy().astype(bool)
    close(r.advantages, case["advantages"], name="advantages")
    # trl's returns/rewards past the value positions are GAE of zeros; compare where defined
    close(r.returns.numpy()[vmask], np.asarray(case["returns"])[vmask], name="returns")
    close(r.rewards.numpy()[vmask], np.asarray(case["rewards"])[vmask], name="rewards")
    close(r.kl.numpy()[mask], np.asarray(case["kl"])[mask], name="kl")
    for key, want in case["rollout_metrics"].items():
        if key in r.stats:
            close(r.stats[key], want, METRIC_TOL, key)


@pytest.mark.parametrize("case", PPO["cases"], ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c["options"].items()) or "defaults")
def test_ppo_loss_matches_trl(case):
    d = ppo_inputs()
    config = PPOConfig(**case["options"])
    r = ppo_advantages(d["logprobs"], d["ref_logprobs"], d["values"], d["scores"], d["mask"],
                       config, value_mask=d["value_mask"])
    new_logprobs = d["new_logprobs"]
    new_logprobs.stop_gradient = False
    loss, stats = ppo_loss(new_logprobs, d["logprobs"], r.advantages, r.returns, d["new_values"],
                           r.values, d["mask"], config, value_mask=d["value_mask"],
                           entropy=entropy_from_logits(d["logits"]))
    close(float(loss), case["loss"], name="loss")
    for key, want in case["metrics"].items():
        close(stats[key], want, METRIC_TOL, key)
    loss.backward()  # the policy gets a gradient on its tokens only
    grad = new_logprobs.grad.numpy()
    assert np.abs(grad[d["mask"].numpy() == 0]).max() == 0
    assert np.abs(grad).sum() > 0


def test_ppo_score_goes_to_the_last_value_position():
    mask = t([[1, 1, 1, 0], [1, 1, 0, 0]], "int64")
    zeros = paddle.zeros([2, 4], dtype="float64")
    r = ppo_advantages(zeros, zeros, zeros, t([2.0, -1.0]), mask,
                       PPOConfig(kl_coef=0.0, lam=1.0))
    np.testing.assert_array_equal(r.rewards.numpy(), [[0, 0, 2, 0], [0, -1, 0, 0]])
    # gamma = lambda = 1, zero values: the return at every token is the score
    np.testing.assert_allclose(r.returns.numpy() * mask.numpy(), [[2, 2, 2, 0], [-1, -1, 0, 0]])


def test_whitening_needs_two_values():
    with pytest.raises(ValueError, match="at least two unmasked values"):
        masked_whiten(t([[1.0, 2.0]]), t([[1, 0]], "int64"))


# --- GRPO -----------------------------------------------------------------------------------

GRPO = FIXTURE["grpo"]


@pytest.mark.parametrize("case", GRPO["advantage_cases"], ids=lambda c: c["scale_rewards"])
def test_group_advantages_match_trl(case):
    adv, stats = group_advantages(t(GRPO["rewards"]), GRPO["num_generations"],
                                  case["scale_rewards"])
    close(adv, case["advantages"])
    for key, want in case["metrics"].items():
        close(stats[key], want, METRIC_TOL, key)


@pytest.mark.parametrize("case", GRPO["cases"], ids=lambda c: "-".join(
    f"{k}={v}" for k, v in c["options"].items()))
def test_grpo_loss_matches_trl(case):
    d = GRPO["data"]
    opts = dict(case["options"])
    max_len = opts.pop("max_completion_length", 10)  # the stub trainer's default
    logprobs = t(d["logprobs"])
    logprobs.stop_gradient = False
    loss, stats = grpo_loss(logprobs, t(d["advantages"]), t(d["mask"], "int64"),
                            GRPOConfig(**opts), old_logprobs=t(d["old_logprobs"]),
                            ref_logprobs=t(d["ref_logprobs"]), max_completion_length=max_len,
                            num_items_in_batch=d["num_items_in_batch"], entropy=t(d["entropy"]))
    close(float(loss), case["loss"], name="loss")
    for key, want in case["metrics"].items():
        close(stats[key], want, METRIC_TOL, key)
    loss.backward()
    assert np.abs(logprobs.grad.numpy()).sum() > 0


def test_grpo_single_iteration_ratio_is_one_and_gradient_is_advantage_weighted():
    # old_logprobs omitted: ratio 1, so the grpo loss gradient is -A / |o_i| per token
    logprobs = t([[-1.0, -2.0, -0.5], [-0.3, -0.7, -0.9]])
    logprobs.stop_gradient = False
    mask = t([[1, 1, 0], [1, 1, 1]], "int64")
    loss, _ = grpo_loss(logprobs, t([1.0, -2.0]), mask, GRPOConfig(loss_type="grpo"))
    loss.backward()
    np.testing.assert_allclose(logprobs.grad.numpy(),
                               [[-1 / 2 / 2, -1 / 2 / 2, 0], [2 / 3 / 2] * 3], rtol=1e-12)


def test_grpo_errors_are_named():
    with pytest.raises(ValueError, match="beta > 0 needs ref_logprobs"):
        grpo_loss(t([[-1.0]]), t([1.0]), t([[1]], "int64"), GRPOConfig(beta=0.1))
    with pytest.raises(ValueError, match="do not split into groups of num_generations=4"):
        group_advantages(t([1.0, 2.0, 3.0]), 4)
