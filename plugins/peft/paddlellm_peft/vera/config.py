"""VeRA options (flat ``llm run`` keys): ``--peft vera --vera_rank 64``."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class VeraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    vera_rank: int = Field(256, gt=0, description="VeRA: rank of the shared random projections")
    target_modules: str | list[str] | None = Field(
        None, description="module names ('q_proj,v_proj') or one regex matched against the "
        "whole module path; default: every attention and MLP projection")
    vera_dropout: float = Field(0.0, ge=0, lt=1, description="VeRA: dropout on the adapter's "
                                "input")
    vera_d_initial: float = Field(0.1, description="VeRA: initial value of every lambda_d")
    vera_path: str | None = Field(None, description="VeRA: start from this adapter "
                                  "directory (peft format)")
    vera_projection_prng_key: int = Field(0, ge=0, description="VeRA: seed of the shared "
                                          "random projections vera_A / vera_B")
