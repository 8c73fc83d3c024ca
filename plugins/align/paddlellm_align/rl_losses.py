"""Policy-gradient losses of RLHF on per-token log-probabilities: PPO and GRPO.

The formulas are ``trl``'s, checked against numbers computed from trl's own code
(``scripts/fixtures/make_rl_fixtures.py``, tests in ``plugins/align/tests/test_rl_losses.py``):

* **PPO** (Schulman et al. 2017; the RLHF recipe of Ouyang et al. 2022, as trl's
  ``PPOTrainer.train``, ``trl/experimental/ppo/ppo_trainer.py``):

  - :func:`ppo_advantages` (once per rollout batch, no gradient): per-token reward
    ``-kl_coef * KL_t`` with ``KL_t`` the k1 (``logπ - logπ_ref``) or k3
    (``e^{-d} - 1 + d`` of ``d = logπ - logπ_ref``) estimator, plus the sequence score on the
    last position the value head sees; optional reward whitening; GAE
    ``δ_t = r_t + γV_{t+1} - V_t``, ``A_t = δ_t + γλA_{t+1}``; returns ``A + V``; advantages
    whitened over the completion tokens.
  - :func:`ppo_loss` (each mini-batch of each PPO epoch): clipped policy loss
    ``max(-A·ρ, -A·clip(ρ, 1-ε, 1+ε))``, clipped value loss
    ``½ max((V-R)², (clip(V, V_old±ε_v)-R)²)``, ``loss = pg + vf_coef·vf``; stats: clip
    fractions, approximate KL ``½ mean(d²)``, entropy, ratio.

* **GRPO** (Shao et al. 2024, DeepSeekMath; trl's ``GRPOTrainer``):

  - :func:`group_advantages`: ``(r - mean_group) / (std + 1e-4)`` with ``scale_rewards``
    ``group`` (std of the prompt's group), ``batch`` (std of the whole batch) or ``none`` (no
    division, Dr. GRPO); standard deviations with Bessel's correction, as trl.
  - :func:`grpo_loss`: ``-min(ρA, clip(ρ, 1-ε, 1+ε_high)A) + β·KL`` per token, the KL the k3
    estimator ``e^{ref-logπ} - (ref-logπ) - 1``; ``ρ`` per token or per sequence (GSPO,
    ``importance_sampling_level="sequence"``); aggregated by ``loss_type`` as trl names them:
    ``grpo`` (mean over each sequence's tokens, then over sequences), ``bnpo`` (mean over the
    batch's tokens), ``dr_grpo`` (sum over tokens / (B · max_completion_length)), ``dapo``
    (sum over tokens / tokens of the whole generation batch, ``num_items_in_batch``).

Tensors are ``(B, T)`` over the completion positions (``T`` the longest completion), masks
``1`` on completion tokens and ``0`` on padding. Values at masked positions never matter
(they may be anything finite). The losses are returned unscaled for gradient accumulation:
the training loop divides by its accumulation steps as for every other loss.

Where trl computes a statistic over padding too (PPO's ``approxkl``, ``ratio`` and
``entropy`` means over every position; the rollout entropy with padding log-probs set to
``1.0``), the statistics here are means over real tokens; the fixture script records both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


# --- masked statistics (trl's masked_mean / masked_var / masked_whiten) ---------------------

def masked_mean(values, mask, axis: int | None = None):
    """Mean of ``values`` where ``mask`` is 1 (over ``axis``, or over everything)."""
    mask = mask.astype(values.dtype)
    if axis is None:
        return (values * mask).sum() / mask.sum()
    return (values * mask).sum(axis=axis) / mask.sum(axis=axis)


def masked_var(values, mask, unbiased: bool = True):
    """Variance of ``values`` where ``mask`` is 1, with Bessel's correction when ``unbiased``."""
    mean = masked_mean(values, mask)
    centered = values - mean
    variance = masked_mean(centered * centered, mask)
    if unbiased:
        count = float(mask.astype(values.dtype).sum())
        if count < 2:
            raise ValueError(f"whitening needs at least two unmasked values, got {int(count)}: "
                             "use a larger rollout batch (or mini-batch)")
        variance = variance * (count / (count - 1))
    return variance


def masked_whiten(values, mask, shift_mean: bool = True):
    """``(values - mean) / sqrt(var + 1e-8)`` over the masked values; with ``shift_mean=False``
    the mean is added back (only the scale changes)."""
    import paddle

    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * paddle.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def entropy_from_logits(logits):
    """Per-position entropy ``logsumexp(z) - Σ softmax(z)·z`` of ``(..., V)`` logits."""
    import paddle
    import paddle.nn.functional as F

    probs = F.softmax(logits, axis=-1)
    return paddle.logsumexp(logits, axis=-1) - (probs * logits).sum(axis=-1)


def _minimum(a, b):
    import paddle

    return paddle.minimum(a, b)


def _maximum(a, b):
    import paddle

    return paddle.maximum(a, b)


def _clamp(x, low, high):
    """torch.clamp with tensor or float bounds: ``min(max(x, low), high)``."""
    import paddle

    if not isinstance(low, paddle.Tensor) and not isinstance(high, paddle.Tensor):
        return paddle.clip(x, min=low, max=high)
    return paddle.minimum(paddle.maximum(x, low), high)


# --- PPO ------------------------------------------------------------------------------------

class PPOConfig(BaseModel):
    """Options of PPO's advantage and loss formulas (trl's ``PPOConfig`` names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    kl_coef: float = Field(0.05, ge=0, description="weight of the per-token KL penalty in the reward")
    kl_estimator: Literal["k1", "k3"] = Field("k1", description="KL estimator of the penalty: "
                                              "k1 (log-ratio) or k3 (e^-d - 1 + d, never negative)")
    gamma: float = Field(1.0, ge=0, le=1, description="discount factor of GAE")
    lam: float = Field(0.95, ge=0, le=1, description="lambda of GAE")
    whiten_rewards: bool = Field(False, description="whiten the per-token rewards before GAE")
    cliprange: float = Field(0.2, gt=0, description="clip range of the policy ratio")
    cliprange_value: float = Field(0.2, gt=0, description="clip range of the value prediction")
    vf_coef: float = Field(0.1, ge=0, description="weight of the value loss")


@dataclass
class PPORollout:
    """What :func:`ppo_advantages` derives from one rollout batch (all ``(B, T)``, detached)."""

    advantages: Any  # whitened over completion tokens, 0 on padding
    returns: Any  # advantages (before whitening) + values
    rewards: Any  # per-token rewards: -kl_coef * KL, plus the score at the last value position
    kl: Any  # per-token KL estimate (0 on padding)
    values: Any  # the values, 0 outside value_mask
    stats: dict[str, float] = field(default_factory=dict)


def ppo_advantages(logprobs, ref_logprobs, values, scores, mask, config: PPOConfig,
                   value_mask=None) -> PPORollout:
    """Rewards, GAE advantages and returns of one rollout batch (no gradient flows).

    ``logprobs``/``ref_logprobs``: ``(B, T)`` per-token log-probs of the sampled completions
    under the rollout policy and the reference; ``values``: ``(B, T)`` value-head outputs;
    ``scores``: ``(B,)`` sequence rewards (a :class:`~paddlellm_align.rewards.Reward`);
    ``mask``: ``(B, T)`` completion tokens (policy loss, KL, advantage whitening).
    ``value_mask`` (default ``mask``): the positions the value head is trained on; the score
    is added at the last of them. trl trains its value head on one position past the
    completion (``padding_mask_p1``) and puts the score there; pass that mask to reproduce it.
    """
    import paddle

    with paddle.no_grad():
        mask = mask.astype(logprobs.dtype)
        value_mask = mask if value_mask is None else value_mask.astype(logprobs.dtype)
        if bool((value_mask.sum(axis=1) == 0).any()):
            raise ValueError("ppo_advantages: a row has no value position (an empty "
                             "completion with an empty value_mask); its score has nowhere to go")
        logr = (ref_logprobs - logprobs) * mask  # (B, T)
        kl = -logr if config.kl_estimator == "k1" else (paddle.exp(logr) - 1) - logr
        kl = kl * mask
        non_score_reward = -config.kl_coef * kl  # (B, T)
        b, t = value_mask.shape
        positions = paddle.arange(t, dtype="int64").unsqueeze(0).expand([b, t])
        last = (positions * value_mask.astype("int64")).argmax(axis=1)  # (B,) last value position
        at_last = paddle.nn.functional.one_hot(last, t).astype(logprobs.dtype)  # (B, T)
        rewards = non_score_reward + at_last * scores.astype(logprobs.dtype).unsqueeze(1)
        if config.whiten_rewards:
            rewards = masked_whiten(rewards, value_mask, shift_mean=False) * value_mask
        values = values.astype(logprobs.dtype) * value_mask
        advantages = _gae(rewards, values, config.gamma, config.lam)
        returns = advantages + values
        advantages = masked_whiten(advantages, mask) * mask
        entropy = (-logprobs * mask).sum(axis=1).mean()
        stats = {
            "objective/kl": float(kl.sum(axis=1).mean()),
            "objective/entropy": float(entropy),
            "objective/non_score_reward": float(non_score_reward.sum(axis=1).mean()),
            "objective/rlhf_reward": float(non_score_reward.sum(axis=1).mean() + scores.mean()),
            "objective/scores": float(scores.mean()),
        }
    return PPORollout(advantages=advantages, returns=returns, rewards=rewards, kl=kl,
                      values=values, stats=stats)


def _gae(rewards, values, gamma: float, lam: float):
    """Generalised advantage estimation over ``(B, T)`` (values 0 past the value positions)."""
    import paddle

    t = rewards.shape[1]
    last = paddle.zeros_like(rewards[:, 0])
    out = []
    for i in reversed(range(t)):
        next_values = values[:, i + 1] if i < t - 1 else paddle.zeros_like(last)
        delta = rewards[:, i] + gamma * next_values - values[:, i]
        last = delta + gamma * lam * last
        out.append(last)
    return paddle.stack(out[::-1], axis=1)


def ppo_loss(logprobs, old_logprobs, advantages, returns, values, old_values, mask,
             config: PPOConfig, value_mask=None, entropy=None) -> tuple[Any, dict[str, float]]:
    """The PPO loss of one mini-batch: ``(loss, stats)``.

    ``logprobs``/``values``: ``(B, T)`` from the current policy and value head (with
    gradient); ``old_logprobs``/``old_values``: from the rollout; ``advantages``/``returns``:
    from :func:`ppo_advantages`; ``mask``/``value_mask`` as there. ``entropy``: optional
    ``(B, T)`` per-token entropies (:func:`entropy_from_logits`) for the stats.
    """
    import paddle

    mask = mask.astype(logprobs.dtype)
    value_mask = mask if value_mask is None else value_mask.astype(logprobs.dtype)
    vpred = values * value_mask
    vclipped = _clamp(vpred, old_values - config.cliprange_value,
                      old_values + config.cliprange_value)
    vf_losses1 = (vpred - returns) * (vpred - returns)
    vf_losses2 = (vclipped - returns) * (vclipped - returns)
    vf_loss = 0.5 * masked_mean(_maximum(vf_losses1, vf_losses2), value_mask)
    diff = (logprobs - old_logprobs) * mask  # (B, T); 0 on padding
    ratio = paddle.exp(diff)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * paddle.clip(ratio, 1.0 - config.cliprange, 1.0 + config.cliprange)
    pg_loss = masked_mean(_maximum(pg_losses, pg_losses2), mask)
    loss = pg_loss + config.vf_coef * vf_loss
    with paddle.no_grad():
        stats = {
            "loss/policy": float(pg_loss),
            "loss/value": float(vf_loss),
            "policy/clipfrac": float(masked_mean((pg_losses2 > pg_losses).astype(mask.dtype), mask)),
            "val/clipfrac": float(masked_mean((vf_losses2 > vf_losses1).astype(mask.dtype),
                                              value_mask)),
            "policy/approxkl": float(0.5 * masked_mean(diff * diff, mask)),
            "val/ratio": float(masked_mean(ratio, mask)),
        }
        if entropy is not None:
            stats["policy/entropy"] = float(masked_mean(entropy, mask))
    return loss, stats


# --- GRPO -----------------------------------------------------------------------------------

class GRPOConfig(BaseModel):
    """Options of GRPO's advantage and loss formulas (trl's ``GRPOConfig`` names and defaults)."""

    model_config = ConfigDict(extra="forbid")

    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo", description="loss normalisation: grpo (per sequence) | bnpo (per batch token) | "
                            "dr_grpo (B * max_completion_length) | dapo (tokens of the generation batch)")
    beta: float = Field(0.0, ge=0, description="weight of the k3 KL to the reference (0: no "
                                                "reference forward)")
    epsilon: float = Field(0.2, gt=0, description="lower clip range of the ratio (and upper, "
                                                  "unless epsilon_high)")
    epsilon_high: float | None = Field(None, gt=0, description="upper clip range (DAPO: 0.28)")
    delta: float | None = Field(None, gt=1, description="two-sided clipping: cap the unclipped "
                                                        "ratio at delta (INTELLECT-2)")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="divide advantages by the std of the group, of the batch, or not")
    importance_sampling_level: Literal["token", "sequence"] = Field(
        "token", description="ratio per token, or one per sequence (GSPO)")


def group_advantages(rewards, num_generations: int, scale_rewards: str = "group"
                     ) -> tuple[Any, dict[str, float]]:
    """``(N,)`` rewards of ``N / num_generations`` prompts (each prompt's completions
    consecutive) -> ``(N,)`` advantages and stats (trl's ``_generate_and_score_completions``)."""
    import paddle

    n = rewards.shape[0]
    if num_generations < 1 or n % num_generations:
        raise ValueError(f"group_advantages: {n} rewards do not split into groups of "
                         f"num_generations={num_generations}")
    if scale_rewards not in ("group", "batch", "none"):
        raise ValueError(f"scale_rewards must be 'group', 'batch' or 'none', got {scale_rewards!r}")
    grouped = rewards.reshape([-1, num_generations])  # (P, G)
    mean = grouped.mean(axis=1, keepdim=True)
    if scale_rewards == "batch":
        std = _std(rewards, None).expand([n]) if n > 1 else paddle.zeros_like(rewards)
    elif num_generations > 1:
        std = _std(grouped, 1).unsqueeze(1).expand([grouped.shape[0], num_generations]).reshape([-1])
    else:
        std = paddle.zeros_like(rewards)
    advantages = rewards - mean.expand_as(grouped).reshape([-1])
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    # the share of completions whose scale (group or batch std) is zero: no learning signal
    stats = {"reward": float(rewards.mean()),
             "reward_std": float(_std(rewards, None)) if n > 1 else 0.0,
             "frac_reward_zero_std": float((std.abs() <= 1e-8).astype("float32").mean())}
    return advantages, stats


def _std(x, axis):
    """Standard deviation with Bessel's correction (trl's ``nanstd`` without NaNs)."""
    count = x.shape[axis] if axis is not None else x.size
    mean = x.mean(axis=axis, keepdim=True)
    c = x - mean
    return ((c * c).sum(axis=axis) / (count - 1)).sqrt()


def grpo_loss(logprobs, advantages, mask, config: GRPOConfig, *, old_logprobs=None,
              ref_logprobs=None, max_completion_length: int | None = None,
              num_items_in_batch: float | None = None, entropy=None) -> tuple[Any, dict[str, float]]:
    """The GRPO loss of one (mini-)batch: ``(loss, stats)``.

    ``logprobs``: ``(B, T)`` current policy log-probs (with gradient); ``advantages``:
    ``(B,)`` from :func:`group_advantages`; ``old_logprobs``: the sampling policy's (default:
    ``logprobs`` detached, the single-iteration case: ratio 1); ``ref_logprobs``: needed when
    ``beta > 0``. ``max_completion_length``: the generation limit (``dr_grpo``; default
    ``T``). ``num_items_in_batch``: completion tokens of the whole generation batch (``dapo``;
    default this batch's). ``entropy``: optional ``(B, T)`` per-token entropies for the stats.
    """
    import paddle

    mask = mask.astype(logprobs.dtype)
    eps_low = config.epsilon
    eps_high = config.epsilon_high if config.epsilon_high is not None else config.epsilon
    adv = advantages.astype(logprobs.dtype).unsqueeze(1)  # (B, 1)
    old = logprobs.detach() if old_logprobs is None else old_logprobs
    log_ratio = (logprobs - old) * mask
    if config.importance_sampling_level == "token":
        log_weights = log_ratio  # (B, T)
    else:  # one ratio per sequence: the mean log-ratio over its tokens (GSPO)
        log_weights = (log_ratio.sum(axis=-1) / mask.sum(axis=-1).clip(min=1.0)).unsqueeze(-1)
    coef_1 = paddle.exp(log_weights)
    if config.beta:
        if ref_logprobs is None:
            raise ValueError("grpo_loss: beta > 0 needs ref_logprobs (the reference policy's "
                             "per-token log-probs)")
        d = (ref_logprobs - logprobs) * mask
        per_token_kl = paddle.exp(d) - d - 1  # (B, T) k3
    coef_2 = paddle.clip(coef_1, 1 - eps_low, 1 + eps_high)
    if config.delta is not None:
        coef_1 = paddle.clip(coef_1, max=config.delta)
    per_token_loss = -_minimum(coef_1 * adv, coef_2 * adv)  # (B, T) or (B, 1)
    if config.beta:
        per_token_loss = per_token_loss + config.beta * per_token_kl
    t = config.loss_type
    if t == "grpo":
        loss = ((per_token_loss * mask).sum(axis=-1) / mask.sum(axis=-1).clip(min=1.0)).mean()
    elif t == "bnpo":
        loss = (per_token_loss * mask).sum() / mask.sum().clip(min=1.0)
    elif t == "dr_grpo":
        length = max_completion_length if max_completion_length is not None else mask.shape[1]
        loss = (per_token_loss * mask).sum() / (per_token_loss.shape[0] * length)
    elif t == "dapo":
        items = num_items_in_batch if num_items_in_batch is not None else float(mask.sum())
        loss = (per_token_loss * mask).sum() / max(float(items), 1.0)
    else:
        raise ValueError(f"unknown GRPO loss_type {t!r}; valid: {', '.join(GRPO_LOSS_TYPES)}")

    with paddle.no_grad():
        def global_mean(x):
            if x.shape[1] == 1:
                return float(x.mean())
            return float((x * mask).sum() / mask.sum().clip(min=1.0))

        def seq_mean(x):
            return x.squeeze(1) if x.shape[1] == 1 else (x * mask).sum(-1) / mask.sum(-1)

        low = ((coef_1 < 1 - eps_low) & (adv < 0)).astype(mask.dtype)
        high = ((coef_1 > 1 + eps_high) & (adv > 0)).astype(mask.dtype)
        region = ((low + high) > 0).astype(mask.dtype)
        stats = {"loss/policy": float(loss),
                 "clip_ratio/low_mean": global_mean(low),
                 "clip_ratio/high_mean": global_mean(high),
                 "clip_ratio/region_mean": global_mean(region),
                 "clip_ratio/low_min": float(seq_mean(low).min()),
                 "clip_ratio/high_max": float(seq_mean(high).max())}
        if config.beta:
            stats["kl"] = global_mean(per_token_kl)
        if entropy is not None:
            stats["entropy"] = global_mean(entropy)
    return loss, stats
