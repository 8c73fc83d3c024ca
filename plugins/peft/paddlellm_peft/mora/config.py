"""MoRA options (flat ``llm run`` keys): ``--peft mora --mora_rank 8 --mora_type 6``."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mora_rank: int = Field(8, gt=0, description="MoRA: the LoRA rank r whose parameter count "
                           "to match; each layer trains an r^ x r^ matrix with "
                           "r^ = round(sqrt((in + out) * r)) (even for type 6)")
    mora_type: Literal[1, 6] = Field(
        6, description="MoRA: compress/decompress operators: 6 = the paper's RoPE-based "
        "rotation of input chunks (Eq. 9, the reference's default for small ranks), "
        "1 = sum input chunks / repeat the output (sharing, Eq. 6, for large ranks)")
    target_modules: str | list[str] | None = Field(
        None, description="module names ('q_proj,v_proj') or one regex matched against the "
        "whole module path; default: every attention and MLP projection")
    mora_dropout: float = Field(0.0, ge=0, lt=1, description="MoRA: dropout on the adapter's "
                                "input")
    mora_path: str | None = Field(None, description="MoRA: start from this adapter directory")
