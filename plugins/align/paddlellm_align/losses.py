"""Preference losses on sequence log-probabilities: the DPO family and KTO.

Each loss is a registered object with a pydantic ``config_class`` (its flat ``llm run`` keys,
named as in PaddleNLP's alignment configs) and ``__call__(batch, options) -> (loss, metrics)``.
``batch`` holds Paddle tensors of per-sequence values, one entry per pair (DPO) or per example
(KTO); see :class:`DPOLoss` and :class:`KTOLoss`. The formulas are those of the papers and of
``trl`` (checked against numbers computed by ``trl`` itself, ``scripts/fixtures/
make_align_fixtures.py``):

* ``sigmoid`` (DPO, Rafailov et al. 2023; with ``label_smoothing`` the conservative cDPO):
  ``-(1-ε) logσ(βΔ) - ε logσ(-βΔ)``, ``Δ = (π_c - ref_c) - (π_r - ref_r)`` (summed log-probs)
* ``hinge`` (SLiC): ``relu(1 - βΔ)``
* ``ipo`` (Azar et al. 2023; per-token normalised log-ratios as trl):
  ``(Δ_c/|y_c| - Δ_r/|y_r| - 1/(2β))²``
* ``simpo`` (Meng et al. 2024; reference-free): ``Δ = mean logπ_c - mean logπ_r - γ/β``, then the
  sigmoid loss with label smoothing
* ``orpo`` (Hong et al. 2024; reference-free): ``NLL(chosen) - β logσ(log odds_c - log odds_r)``
  with ``log odds = mean logπ - log(1 - exp(mean logπ))``
* ``kto`` (Ethayarajh et al. 2024): desirable ``w_d (1 - σ(β(r - z)))``, undesirable
  ``w_u (1 - σ(β(z - r)))``, ``r`` the log-ratio, ``z`` the batch KL estimate from mismatched
  prompt/completion pairs, clamped at 0 and detached.

Every loss adds ``sft_loss_ratio`` × the mean NLL of the chosen (desirable) tokens, and scales
the preference term by ``pref_loss_ratio`` (PaddleNLP's names).
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "simpo", "orpo")
REFERENCE_FREE = ("simpo", "orpo")


class DPOConfig(BaseModel):
    """Options of ``--align dpo`` (and its aliases ``simpo``, ``orpo``, ``ipo``, ``hinge``)."""

    model_config = ConfigDict(extra="forbid")

    loss_type: Literal["sigmoid", "hinge", "ipo", "simpo", "orpo"] = Field(
        "sigmoid", description="sigmoid (DPO) | hinge | ipo | simpo | orpo")
    beta: float = Field(0.1, gt=0, description="inverse temperature of the implicit reward "
                        "(IPO's tau; ORPO's lambda)")
    simpo_gamma: float = Field(0.5, description="SimPO target reward margin gamma")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="probability that a "
                                   "preference label is flipped (cDPO); sigmoid and simpo")
    sft_loss_ratio: float | None = Field(None, ge=0, description="weight of the chosen "
                                         "responses' NLL (default 0; 1 for orpo)")
    pref_loss_ratio: float = Field(1.0, ge=0, description="weight of the preference loss")
    precompute_ref_logps: bool = Field(False, description="compute reference log-probs once "
                                       "before training (no reference forward per step)")


class KTOConfig(BaseModel):
    """Options of ``--align kto``."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(0.1, gt=0, description="inverse temperature of the implicit reward")
    desirable_weight: float = Field(1.0, ge=0, description="weight of desirable examples")
    undesirable_weight: float = Field(1.0, ge=0, description="weight of undesirable examples")
    sft_loss_ratio: float | None = Field(None, ge=0, description="weight of the desirable "
                                         "responses' NLL (default 0)")
    pref_loss_ratio: float = Field(1.0, ge=0, description="weight of the KTO loss")
    precompute_ref_logps: bool = Field(False, description="compute reference log-probs (and "
                                       "the KL pairs') once before training")


def _mean(x) -> float:
    return float(x.mean()) if x.shape[0] else 0.0


class DPOLoss:
    """Pairwise losses. ``batch`` keys, each ``(P,)`` over ``P`` pairs:
    ``chosen_logps``, ``rejected_logps`` (summed policy log-probs), ``chosen_lengths``,
    ``rejected_lengths`` (response tokens), ``ref_chosen_logps``, ``ref_rejected_logps``
    (reference-based types), and the scalar ``chosen_nll`` (mean NLL over chosen tokens)."""

    name = "dpo"
    kind = "pairwise"
    config_class: ClassVar[type[BaseModel]] = DPOConfig
    needs_reference = True  # of the default loss type; see needs_reference_for

    def resolve(self, options: DPOConfig | None, align_name: str) -> DPOConfig:
        """The options with ``loss_type`` taken from an alias (``--align simpo``)."""
        options = options or DPOConfig()
        if align_name in DPO_LOSS_TYPES and align_name != "sigmoid":
            if "loss_type" in options.model_fields_set and options.loss_type != align_name:
                from paddlellm.errors import ConfigError

                raise ConfigError(f"--align {align_name} conflicts with --loss_type "
                                  f"{options.loss_type}; use --align dpo --loss_type "
                                  f"{options.loss_type}")
            options = options.model_copy(update={"loss_type": align_name})
        return options

    def needs_reference_for(self, options: DPOConfig) -> bool:
        return options.loss_type not in REFERENCE_FREE

    def __call__(self, batch: Mapping[str, Any], options: DPOConfig) -> tuple[Any, dict[str, float]]:
        import paddle
        import paddle.nn.functional as F

        t, beta, eps = options.loss_type, options.beta, options.label_smoothing
        pc, pr = batch["chosen_logps"], batch["rejected_logps"]  # (P,)
        lc = batch["chosen_lengths"].astype(pc.dtype)
        lr = batch["rejected_lengths"].astype(pc.dtype)
        metrics: dict[str, float] = {}
        if t in REFERENCE_FREE:
            avg_c, avg_r = pc / lc, pr / lr  # (P,) per-token means
            chosen_rewards, rejected_rewards = beta * avg_c.detach(), beta * avg_r.detach()
            if t == "simpo":
                logits = avg_c - avg_r - options.simpo_gamma / beta
                losses = (-F.log_sigmoid(beta * logits) * (1 - eps)
                          - F.log_sigmoid(-beta * logits) * eps)
            else:  # orpo
                log_odds = (avg_c - avg_r) - (_log1mexp(avg_c) - _log1mexp(avg_r))
                ratio = F.log_sigmoid(log_odds)
                losses = -beta * ratio
                metrics["log_odds_ratio"] = float(ratio.mean())
                metrics["log_odds_chosen"] = float(log_odds.mean())
        else:
            rc, rr = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
            chosen_ratio, rejected_ratio = pc - rc, pr - rr  # (P,)
            chosen_rewards = beta * chosen_ratio.detach()
            rejected_rewards = beta * rejected_ratio.detach()
            delta = chosen_ratio - rejected_ratio
            if t == "sigmoid":
                losses = (-F.log_sigmoid(beta * delta) * (1 - eps)
                          - F.log_sigmoid(-beta * delta) * eps)
            elif t == "hinge":
                losses = F.relu(1 - beta * delta)
            else:  # ipo
                d = chosen_ratio / lc - rejected_ratio / lr - 1 / (2 * beta)
                losses = d * d
        pref = losses.mean()
        sft_ratio = options.sft_loss_ratio
        if sft_ratio is None:
            sft_ratio = 1.0 if t == "orpo" else 0.0
        loss = options.pref_loss_ratio * pref
        if sft_ratio:
            loss = loss + sft_ratio * batch["chosen_nll"]
        metrics.update({
            "rewards/chosen": _mean(chosen_rewards),
            "rewards/rejected": _mean(rejected_rewards),
            "rewards/margins": _mean(chosen_rewards - rejected_rewards),
            "rewards/accuracies": _mean((chosen_rewards > rejected_rewards).astype("float32")),
            "logps/chosen": _mean(pc.detach()),
            "logps/rejected": _mean(pr.detach()),
            "pref_loss": float(pref),
            "sft_loss": float(batch["chosen_nll"]),
        })
        return loss, metrics


class KTOLoss:
    """Pointwise loss. ``batch`` keys, each ``(B,)``: ``logps`` (summed policy log-probs),
    ``labels`` (bool, desirable), ``ref_logps``, ``kl_logps`` and ``ref_kl_logps`` (the
    mismatched pairs: prompt ``i`` with completion ``i-1``), and the scalar ``chosen_nll``."""

    name = "kto"
    kind = "pointwise"
    config_class: ClassVar[type[BaseModel]] = KTOConfig
    needs_reference = True

    def resolve(self, options: KTOConfig | None, align_name: str) -> KTOConfig:
        return options or KTOConfig()

    def needs_reference_for(self, options: KTOConfig) -> bool:
        return True

    def __call__(self, batch: Mapping[str, Any], options: KTOConfig) -> tuple[Any, dict[str, float]]:
        import paddle
        import paddle.nn.functional as F

        beta = options.beta
        logps, ref = batch["logps"], batch["ref_logps"]  # (B,)
        labels = batch["labels"].astype("bool")  # (B,)
        # batch KL estimate (trl): mean log-ratio of the mismatched pairs, clamped, detached
        kl = (batch["kl_logps"] - batch["ref_kl_logps"]).mean().detach()
        kl = paddle.clip(kl, min=0.0)
        ratio = logps - ref  # (B,)
        desirable = options.desirable_weight * (1 - F.sigmoid(beta * (ratio - kl)))
        undesirable = options.undesirable_weight * (1 - F.sigmoid(beta * (kl - ratio)))
        losses = paddle.where(labels, desirable, undesirable)  # (B,)
        pref = losses.mean()
        loss = options.pref_loss_ratio * pref
        if options.sft_loss_ratio:
            loss = loss + options.sft_loss_ratio * batch["chosen_nll"]
        rewards = beta * ratio.detach()
        chosen = paddle.masked_select(rewards, labels)
        rejected = paddle.masked_select(rewards, ~labels)
        metrics = {
            "kl": float(kl),
            "rewards/chosen": _mean(chosen),
            "rewards/rejected": _mean(rejected),
            "rewards/margins": _mean(chosen) - _mean(rejected),
            "logps/chosen": _mean(paddle.masked_select(logps.detach(), labels)),
            "logps/rejected": _mean(paddle.masked_select(logps.detach(), ~labels)),
            "pref_loss": float(pref),
            "sft_loss": float(batch["chosen_nll"]),
        }
        # accuracy of a pointwise reward: desirable above, undesirable below the KL baseline
        right = paddle.where(labels, rewards > beta * kl, rewards < beta * kl)
        metrics["rewards/accuracies"] = _mean(right.astype("float32"))
        return loss, metrics


def _log1mexp(x):
    """``log(1 - exp(x))`` for ``x < 0``, stable on both sides of ``-log 2`` (as trl)."""
    import paddle

    x = paddle.clip(x, max=-1e-7)
    small = paddle.log(-paddle.expm1(x))
    large = paddle.log1p(-paddle.exp(x))
    return paddle.where(x > -0.6931471805599453, small, large)


DPO = DPOLoss()
KTO = KTOLoss()
