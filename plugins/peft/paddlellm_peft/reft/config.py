"""ReFT options (flat ``llm run`` keys): ``--peft reft --reft_rank 4 --reft_positions f7+l7``."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ReftConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reft_rank: int = Field(8, gt=0, description="ReFT: rank of the intervention subspace R")
    reft_layers: str = Field("all", description="ReFT: decoder layers to intervene on: 'all', "
                             "'every_other' (0, 2, 4, ...) or indices '0;2;5' / '0,2,5'")
    reft_positions: str = Field("f7+l7", description="ReFT: prompt positions to intervene on: "
                                "'f<p>' first p, 'l<s>' last s, 'f<p>+l<s>' both (pyreft's "
                                "names)")
    reft_dropout: float = Field(0.0, ge=0, lt=1, description="ReFT: dropout on the "
                                "intervention's edit")
    reft_seed: int = Field(0, ge=0, description="ReFT: seed of the initial R and W")
    reft_path: str | None = Field(None, description="ReFT: start from this adapter directory")
