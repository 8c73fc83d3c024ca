"""An alignment loss: DPO on length-normalised log-ratios (``--align ln_dpo``).

``Δ = (π_c - ref_c)/|y_c| - (π_r - ref_r)/|y_r|`` (per-token log-ratios), loss ``-log σ(βΔ)``.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LNDPOConfig(BaseModel):
    """Options of ``--align ln_dpo`` (its ``llm run`` keys)."""

    model_config = ConfigDict(extra="forbid")

    beta: float = Field(1.0, gt=0, description="inverse temperature of the per-token reward")
    precompute_ref_logps: bool = Field(False, description="compute reference log-probs once "
                                       "before training")


class LengthNormalisedDPO:
    """Follows ``paddlellm.api.AlignmentLoss``."""

    name = "ln_dpo"
    kind = "pairwise"
    config_class = LNDPOConfig

    def resolve(self, options: LNDPOConfig | None, align_name: str) -> LNDPOConfig:
        return options or LNDPOConfig()

    def needs_reference_for(self, options: LNDPOConfig) -> bool:
        return True

    def __call__(self, batch, options: LNDPOConfig):
        import paddle.nn.functional as F

        dtype = batch["chosen_logps"].dtype
        chosen = (batch["chosen_logps"] - batch["ref_chosen_logps"]) / \
            batch["chosen_lengths"].astype(dtype)  # (P,)
        rejected = (batch["rejected_logps"] - batch["ref_rejected_logps"]) / \
            batch["rejected_lengths"].astype(dtype)  # (P,)
        margin = chosen - rejected
        loss = -F.log_sigmoid(options.beta * margin).mean()
        accuracy = float((margin > 0).astype("float32").mean())
        return loss, {"margin": float(margin.mean()), "rewards/accuracies": accuracy}


LOSS = LengthNormalisedDPO()
