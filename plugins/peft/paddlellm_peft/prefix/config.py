"""Options of prefix tuning (flat ``llm run`` keys)."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class PrefixConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_prefix_tokens: int = Field(16, gt=0, description="prefix tuning: virtual tokens per layer")
    prefix_projection: bool = Field(False, description="prefix tuning: reparameterise the prefix "
                                    "through a two-layer tanh MLP while training (the paper's "
                                    "trick); the saved adapter holds the projected keys/values")
    prefix_projection_hidden_size: int | None = Field(
        None, gt=0, description="prefix tuning: hidden size of that MLP (default: kv heads x "
        "head dim)")
    prefix_path: str | None = Field(None, description="prefix tuning: start from this saved "
                                    "prefix (peft-format directory)")
