"""``AutoModelForCausalLM``: load or build a causal LM through the registered model families.

The family is found by the checkpoint's ``model_type`` (``from_pretrained``) or by a family /
preset name (``from_config("qwen2.5-0.5b")``); families come from plugins
(``register_models``), so this module knows no family itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from ..errors import UnknownPluginError
from ..plugin.manager import get_plugin_manager
from ..plugin.registry import unknown_name_message


def family_for_model_type(model_type: str, hf: Mapping[str, Any] | None = None,
                          source: str | os.PathLike | None = None) -> Any:
    """The registered family whose ``model_types`` include ``model_type``.

    When several families share a ``model_type`` (ChatGLM-6B and ChatGLM2/3 both say
    ``chatglm``), the config ``hf`` decides: the family whose ``accepts_config(hf)`` is True
    (:class:`~paddlellm.interfaces.ModelFamily`); none or several is an error naming
    ``source`` (the config file). Without ``hf`` the first registered one is returned.
    """
    registry = get_plugin_manager().registry
    known: list[str] = []
    matches = []
    for entry in registry.entries("model"):
        family = entry.load()
        types = tuple(getattr(family, "model_types", ()))
        if model_type in types:
            matches.append(family)
        known.extend(types)
    if not matches:
        raise UnknownPluginError(unknown_name_message("model_type", model_type, known))
    return choose_family(matches, model_type, hf, source)


def choose_family(families: list, model_type: str, hf: Mapping[str, Any] | None,
                  source: str | os.PathLike | None = None) -> Any:
    """Among ``families`` sharing ``model_type``, the one whose ``accepts_config(hf)`` holds."""
    if len(families) == 1 or hf is None:
        return families[0]
    chosen = [f for f in families
              if getattr(f, "accepts_config", None) is None or f.accepts_config(hf)]
    if len(chosen) == 1:
        return chosen[0]
    names = ", ".join(f.name for f in families)
    where = source or "the config"
    if not chosen:
        raise UnknownPluginError(f"{where}: model_type '{model_type}' is shared by the families "
                                 f"{names}, and none of them recognises this config's keys")
    raise UnknownPluginError(f"{where}: model_type '{model_type}' matches several families "
                             f"({', '.join(f.name for f in chosen)}); their accepts_config "
                             "must tell them apart")


def family_by_name(name: str) -> Any:
    """The family registered as ``name`` (a family name, alias or preset)."""
    return get_plugin_manager().registry.load("model", name)


class AutoModelForCausalLM:
    """Factory only: ``from_pretrained(path)`` and ``from_config(name_or_config)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("use AutoModelForCausalLM.from_pretrained(...) or .from_config(...)")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: str = "float32",
                        quant_type: str | None = None, quant_config: Any = None,
                        lora_path: str | os.PathLike | None = None,
                        prefix_path: str | os.PathLike | None = None,
                        convert_from_torch: bool | None = None, **kwargs: Any):
        """Load a Hugging Face checkpoint directory (``config.json`` + safetensors or ``.bin``)
        or a Hub id (``"Qwen/Qwen2.5-0.5B-Instruct"``, see :func:`paddlellm.hub.resolve_model_path`).

        ``lora_path`` / ``prefix_path``: a peft-format adapter directory loaded on top
        (:func:`paddlellm.modeling.peft.load_adapter`; the method comes from its ``peft_type``).

        A checkpoint with ``quantization_config`` in ``config.json`` is loaded by the quantizer
        registered for its ``quant_type`` (or, for GPTQ/AWQ checkpoints of other tools, its
        ``quant_method``). ``quant_type=`` quantizes a float checkpoint on load
        (calibration-free types such as ``weight_only_int8``; ``quant_config``: its options).

        ``convert_from_torch`` is accepted for PaddleNLP compatibility and changes nothing:
        torch checkpoints (``pytorch_model.bin``, safetensors) are always read directly.
        """
        from ..checkpoint._errors import CheckpointFormatError
        from ..checkpoint.model_config import read_model_config

        if kwargs:
            raise TypeError(f"unexpected arguments: {', '.join(sorted(kwargs))}")
        base, adapter = split_adapter_dir(path)
        if adapter is not None:  # an adapter folder: its base, then the adapter on top
            if lora_path or prefix_path:
                raise ValueError(f"{path} is an adapter folder; give its base as the path to "
                                 "load another adapter")
            return cls.from_pretrained(base, dtype=dtype, quant_type=quant_type,
                                       quant_config=quant_config, lora_path=adapter)
        if lora_path or prefix_path:
            from .peft import load_adapter

            if lora_path and prefix_path:
                raise ValueError("give one of lora_path and prefix_path")
            model = cls.from_pretrained(path, dtype=dtype, quant_type=quant_type,
                                        quant_config=quant_config)
            return load_adapter(model, lora_path or prefix_path)
        from ..hub import ModelNotFoundError, is_hub_id, resolve_model_path

        requested = path
        path = resolve_model_path(path)  # a local folder, or a Hub id downloaded to its cache
        config_path = Path(path) / "config.json"
        if not config_path.is_file():
            raise ModelNotFoundError(f"no config.json in {path}")
        hf = read_model_config(path)  # checked: errors name the file and the field
        if "model_type" not in hf:
            raise CheckpointFormatError(f"{config_path} has no 'model_type'")
        family = family_for_model_type(hf["model_type"], hf, config_path)
        if not hasattr(family, "from_pretrained"):
            raise TypeError(f"model family '{family.name}' builds models but cannot load "
                            "checkpoints (it has no from_pretrained)")
        stored = hf.get("quantization_config")
        if stored:
            # ours name a quant_type; checkpoints of other tools (GPTQ, AWQ) a quant_method
            stored_type = (stored.get("quant_type") or stored.get("quant_method")
                           if isinstance(stored, dict) else None)
            if not isinstance(stored_type, str) or not stored_type:
                raise CheckpointFormatError(f"{config_path}: quantization_config has no "
                                            "'quant_type' or 'quant_method'")
            if quant_type not in (None, stored_type):
                raise ValueError(f"{path} is already quantized as '{stored_type}'; "
                                 f"cannot load it as quant_type='{quant_type}'")
            model = quantizer_for(stored_type).load_pretrained(family, path, stored, dtype=dtype)
        else:
            model = family.from_pretrained(path, dtype=dtype)
            from ..plugin.precision import needs_upcast, store_low_compute_fp32

            if needs_upcast(dtype):  # e.g. bfloat16 on CPU: half the weight memory, float32 math
                model = store_low_compute_fp32(model, dtype)
            if quant_type:
                model = quantize_model(model, quant_type, config=quant_config)
        # adapters saved on it name their base: the Hub id a user typed, else the folder
        model.name_or_path = (str(requested) if is_hub_id(str(requested)) and not Path(requested).exists()
                              else str(Path(path).resolve()))
        return model

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


def split_adapter_dir(path: str | os.PathLike) -> tuple[str, str | None]:
    """``(base, adapter)`` for a peft-format adapter folder (``adapter_config.json`` and no
    ``config.json``): the base is its ``base_model_name_or_path``, read relative to the
    adapter folder when it is a relative path found there. ``(path, None)`` otherwise."""
    from ..errors import ConfigError
    from .peft import read_adapter_config

    folder = Path(path)
    if (folder / "config.json").is_file() or not (folder / "adapter_config.json").is_file():
        return str(path), None
    base = read_adapter_config(folder).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{folder / 'adapter_config.json'} does not name its base model "
                          "(base_model_name_or_path is empty): load the base with "
                          f"--model_name_or_path BASE --lora_path {folder}")
    if not Path(base).is_absolute() and (folder / base / "config.json").is_file():
        base = str(folder / base)
    if not (Path(base) / "config.json").is_file():
        raise ConfigError(f"{folder / 'adapter_config.json'}: its base model {base} is not a "
                          "checkpoint folder here (moved or deleted?)")
    return str(base), str(folder)


def quantizer_for(quant_type: str) -> Any:
    """The quantizer registered (kind "quantizer") under ``quant_type``."""
    return get_plugin_manager().registry.load("quantizer", quant_type)


def quantize_model(model: Any, quant_type: str, calibration: Any = None, config: Any = None) -> Any:
    """Quantize ``model`` in place with the quantizer registered for ``quant_type``."""
    quantizer = quantizer_for(quant_type)
    if calibration is None and getattr(quantizer, "needs_calibration", False):
        raise ValueError(f"quant_type '{quant_type}' needs calibration data: run `llm quantize "
                         f"--quant_type {quant_type} --calibration_data FILE --output_dir OUT` and "
                         "load OUT")
    return quantizer.quantize(model, quant_type, calibration, config or {})
