"""What a family is: a config adapter, a weight-name map and (rarely) blocks of its own.

Paddle-free: building imports the decoder on first use. Weight maps work on NumPy arrays in
the "torch layout" of ``transformers`` (linear weights ``(out, in)``); the loader transposes
into Paddle's ``(in, out)``.

Name rules are pairs of module-path templates ``(ours, hf)`` with ``{i}`` (layer) and ``{e}``
(expert) placeholders; the leaf (``weight``/``bias``) is carried over.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

import numpy as np

from ..config import ModelConfig

Rule = tuple[str, str]


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{e\}", r"(?P<e>\d+)")
    return re.compile(rf"^{pattern}\.(?P<leaf>weight|bias)$")


class Family:
    """Base family; subclasses set the class attributes and override what differs."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    description: str = ""
    architecture: str = ""  # the transformers class name written to config.json
    #: preset name -> Hugging Face config fields (sizes); keys are registered as aliases
    presets: Mapping[str, Mapping[str, Any]] = {}
    #: extra aliases of the family itself (``qwen`` for ``qwen2``)
    aliases: tuple[str, ...] = ()
    #: preset used when only the family name is given (``--model qwen``)
    default_preset: str = ""
    #: aliases (in ``aliases``) that stand for another preset than the default one
    alias_presets: Mapping[str, str] = {}
    rules: tuple[Rule, ...] = ()
    #: HF tensor names (regex) that carry no weights (buffers, rotary caches)
    ignore: tuple[str, ...] = (r".*rotary_emb\.inv_freq$",)

    def __init__(self) -> None:
        self._to_ours = [(_compile(hf), ours) for ours, hf in self.rules]
        self._to_hf = [(_compile(ours), hf) for ours, hf in self.rules]
        self._ignore = [re.compile(p) for p in self.ignore]

    def __repr__(self) -> str:
        return f"<family {self.name}>"

    # -- configs ---------------------------------------------------------------------------
    def config_from_hf(self, hf: Mapping[str, Any]) -> ModelConfig:
        raise NotImplementedError

    def config_to_hf(self, config: ModelConfig) -> dict[str, Any]:
        raise NotImplementedError

    def config_for(self, name: str | None = None, **overrides: Any) -> ModelConfig:
        """The config of preset ``name`` (the family's default preset for its own name/aliases)."""
        from paddlellm.api import unknown_name_message

        key = name if name in self.presets else None
        if key is None:
            if name not in (None, self.name, *self.aliases, *self.model_types):
                raise KeyError(unknown_name_message(f"{self.name} preset", name,
                                                    [*self.presets, self.name]))
            key = self.alias_presets.get(name, self.default_preset)
        hf = {"model_type": self.model_types[0], **self.presets[key], **overrides}
        return self.config_from_hf(hf)

    # -- building --------------------------------------------------------------------------
    def build(self, config: ModelConfig, dtype: str = "float32", init: bool = True):
        """A :class:`~paddlellm_models.decoder.CausalLM` (random init unless ``init=False``)."""
        from paddlellm.api import canonical_dtype

        from ..decoder import CausalLM, build_context

        dtype = canonical_dtype(dtype)  # "bf16" -> "bfloat16"
        if dtype not in ("float32", "bfloat16", "float16", "float64"):
            raise ValueError(f"models are built in float32, bfloat16 or float16, not '{dtype}'")
        with build_context(dtype, init=init, std=config.initializer_range):
            return CausalLM(config, family=self)

    def from_pretrained(self, path: str, dtype: str = "float32"):
        """The checkpoint at ``path`` through the core's loading service."""
        from paddlellm.api import load_pretrained

        return load_pretrained(self, path, dtype=dtype)

    # -- weight names ----------------------------------------------------------------------
    def rename(self, name: str, to_hf: bool) -> str | None:
        for pattern, template in (self._to_hf if to_hf else self._to_ours):
            m = pattern.match(name)
            if m:
                groups = {k: v for k, v in m.groupdict().items() if k != "leaf" and v is not None}
                return f"{template.format(**groups)}.{m['leaf']}"
        return None

    def is_ignored(self, hf_name: str) -> bool:
        return any(p.match(hf_name) for p in self._ignore)

    def from_hf_tensor(self, hf_name: str, array: np.ndarray,
                       config: ModelConfig) -> list[tuple[str, np.ndarray]]:
        """HF tensor -> ``[(our name, array in torch layout)]``; ``[]`` for ignored tensors."""
        if self.is_ignored(hf_name):
            return []
        if hf_name == "lm_head.weight" and config.tie_embeddings:
            return []
        ours = self.rename(hf_name, to_hf=False)
        if ours is None:
            raise KeyError(f"{self.name}: unexpected tensor '{hf_name}' in the checkpoint")
        return [(ours, array)]

    def to_hf_state(self, state: Mapping[str, np.ndarray],
                    config: ModelConfig) -> dict[str, np.ndarray]:
        """Our state (torch layout) -> HF tensor names."""
        out = {}
        for name, array in state.items():
            hf = self.rename(name, to_hf=True)
            if hf is None:
                raise KeyError(f"{self.name}: no Hugging Face name for '{name}'")
            out[hf] = array
        return out

    def save_groups(self, names: Iterable[str], config: ModelConfig) -> list[list[str]]:
        """Our parameter names grouped so that each group maps to HF tensors on its own
        (saving streams group by group). Families with fused tensors group their parts."""
        return [[n] for n in names]

    def num_parameters(self, config: ModelConfig) -> int:
        """Parameter count of ``config`` (for ``llm models``); families with blocks of their
        own add theirs."""
        return config.num_parameters()

    def all_names(self) -> Iterable[str]:
        return (self.name, *self.aliases, *self.presets)


QKV = ("q_proj", "k_proj", "v_proj")


# --- shared config helpers ------------------------------------------------------------------

def rope_from_hf(hf: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """``(theta, scaling or None)`` from v5 ``rope_parameters`` or v4 ``rope_theta``/``rope_scaling``."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = hf.get("rope_scaling")
    if scaling:
        params = {**params, **scaling}
    theta = float(params.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type", params.get("type", "default"))
    params.pop("type", None)
    if kind == "default":
        return theta, None
    params["rope_type"] = kind
    if kind in ("llama3", "yarn") and "original_max_position_embeddings" not in params:
        params["original_max_position_embeddings"] = hf.get("original_max_position_embeddings",
                                                            hf.get("max_position_embeddings"))
    return theta, params


def rope_to_hf(config: ModelConfig) -> dict[str, Any]:
    params = {"rope_theta": config.rope_theta, "rope_type": "default"}
    out: dict[str, Any] = {"rope_theta": config.rope_theta}
    if config.rope_scaling:
        params.update(config.rope_scaling)
        out["rope_scaling"] = dict(config.rope_scaling)  # transformers 4.x readers
    out["rope_parameters"] = params
    return out


def eos_from_hf(hf: Mapping[str, Any]) -> dict[str, Any]:
    return {"bos_token_id": hf.get("bos_token_id"), "eos_token_id": hf.get("eos_token_id"),
            "pad_token_id": hf.get("pad_token_id")}


def tokens_to_hf(config: ModelConfig) -> dict[str, Any]:
    return {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
            "pad_token_id": config.pad_token_id}
