"""LoKr options (flat ``llm run`` keys): ``--peft lokr --lokr_rank 8 --lokr_alpha 8``."""
from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field, field_validator


class LoKrConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lokr_rank: int = Field(8, gt=0, description="LoKr: rank r of the decomposed factors")
    lokr_alpha: float | None = Field(None, gt=0, description="LoKr: the update is scaled by "
                                     "alpha / r (default alpha = r)")
    target_modules: str | list[str] | None = Field(
        None, description="module names ('q_proj,v_proj') or one regex matched against the "
        "whole module path; default: every attention and MLP projection")
    lokr_decompose_both: bool = Field(False, description="LoKr: also decompose the first "
                                      "(small) Kronecker factor into a rank-r product")
    lokr_decompose_factor: int = Field(-1, description="LoKr: factorise dimensions as "
                                       "(factor, dim / factor); -1: near sqrt(dim)")
    lokr_rank_dropout: float = Field(0.0, ge=0, lt=1, description="LoKr: drop output rows of "
                                     "the update while training")
    lokr_rank_dropout_scale: bool = Field(False, description="LoKr: rescale kept rows by the "
                                          "kept fraction")
    lokr_module_dropout: float = Field(0.0, ge=0, lt=1, description="LoKr: skip a layer's "
                                       "update with this probability while training")
    lokr_path: str | None = Field(None, description="LoKr: start from this adapter "
                                  "directory (peft format)")
    lokr_rank_pattern: dict[str, int] = Field(
        default_factory=dict, description="LoKr: rank per module-name pattern (peft's "
        "rank_pattern), e.g. {'v_proj': 16}")
    lokr_alpha_pattern: dict[str, float] = Field(
        default_factory=dict, description="LoKr: alpha per module-name pattern (alpha_pattern)")

    @field_validator("lokr_rank_pattern", "lokr_alpha_pattern", mode="before")
    @classmethod
    def _json_text(cls, value):
        """``--lokr_rank_pattern '{"v_proj": 16}'`` arrives as text from the command line."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected a JSON object like '{{\"v_proj\": 16}}': {exc}")
        return value
