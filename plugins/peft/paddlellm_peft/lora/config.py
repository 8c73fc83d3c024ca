"""LoRA options (flat, PaddleNLP's names): ``--peft lora --lora_rank 8 --rslora ...``."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LoraConfig(BaseModel):
    """LoRA and its variants; the variants are switches of one method."""

    model_config = ConfigDict(extra="forbid")

    lora_rank: int = Field(8, gt=0, description="rank r of the update B @ A")
    lora_alpha: float = Field(16.0, gt=0, description="scaling numerator: alpha / r "
                              "(alpha / sqrt(r) with --rslora)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: str | list[str] | None = Field(
        None, description="module names ('q_proj,v_proj') or one regex matched against the "
        "whole module path ('.*(q|v)_proj'); default: every attention and MLP projection")
    rslora: bool = Field(False, description="rank-stabilised scaling alpha / sqrt(r)")
    lora_plus_scale: float = Field(1.0, gt=0, description="LoRA+: B learns this many times "
                                   "faster than A (4-16 in the paper)")
    pissa: bool = Field(False, description="PiSSA: initialise A, B from the top-r singular "
                        "vectors of W (the base keeps the residual)")
    use_dora: bool = Field(False, description="DoRA: a trainable magnitude per output times "
                           "the normalised direction W + BA")
    lora_use_mixer: bool = Field(False, description="MoSLoRA: a trainable r x r mixer between "
                                 "A and B")
    lora_path: str | None = Field(None, description="start from this adapter directory "
                                  "(peft format)")

    @model_validator(mode="after")
    def _compatible(self) -> "LoraConfig":
        if self.pissa and (self.use_dora or self.lora_use_mixer):
            raise ValueError("--pissa cannot be combined with --use_dora or --lora_use_mixer")
        return self

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (self.lora_rank ** 0.5 if self.rslora else self.lora_rank)
