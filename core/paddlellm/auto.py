"""``AutoModelForCausalLM``: load or build a causal LM through the registered model families.

The family is found by the checkpoint's ``model_type`` (``from_pretrained``) or by a family /
preset name (``from_config("qwen2.5-0.5b")``); families come from plugins
(``register_models``), so this module knows no family itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import UnknownPluginError
from .plugins import get_plugin_manager
from .registry import unknown_name_message


def family_for_model_type(model_type: str) -> Any:
    """The registered family whose ``model_types`` include ``model_type``."""
    registry = get_plugin_manager().registry
    known: list[str] = []
    for entry in registry.entries("model"):
        family = entry.load()
        types = tuple(getattr(family, "model_types", ()))
        if model_type in types:
            return family
        known.extend(types)
    raise UnknownPluginError(unknown_name_message("model_type", model_type, known))


def family_by_name(name: str) -> Any:
    """The family registered as ``name`` (a family name, alias or preset)."""
    return get_plugin_manager().registry.load("model", name)


class AutoModelForCausalLM:
    """Factory only: ``from_pretrained(path)`` and ``from_config(name_or_config)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use AutoModelForCausalLM.from_pretrained(...) or .from_config(...)")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32", **kwargs: Any):
        """Load a Hugging Face checkpoint directory (``config.json`` + safetensors or ``.bin``)."""
        from .checkpoint import read_json

        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        config_path = Path(path) / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"no config.json in {path}")
        hf = read_json(config_path)
        if "model_type" not in hf:
            raise ValueError(f"{config_path} has no 'model_type'")
        family = family_for_model_type(hf["model_type"])
        if not hasattr(family, "from_pretrained"):
            raise TypeError(f"model family '{family.name}' builds models but cannot load "
                            "checkpoints (it has no from_pretrained)")
        return family.from_pretrained(path, dtype=dtype)

    @classmethod
    def from_config(cls, config: Any, dtype: str = "float32", **overrides: Any):
        """Build a randomly initialised model from a preset/family name or a model config.

        ``overrides`` are Hugging Face config keys (``vocab_size=...``) applied to a preset.
        """
        if isinstance(config, str):
            family = family_by_name(config)
            model_config = family.config_for(config, **overrides)
        else:
            if overrides:
                config = config.replace(**overrides)
            family, model_config = family_by_name(config.family), config
        return family.build(model_config, dtype=dtype)
