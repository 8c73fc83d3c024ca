"""Model preparation for inference: merge a PEFT adapter, quantize through a plugin."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def merge_lora(model: Any, lora_path: str | Path) -> Any:
    """Load a ``peft``-format adapter directory (LoRA and the other mergeable methods) and
    fold it into the base weights, so inference runs on plain layers at full speed."""
    from ..modeling import peft

    if not (Path(lora_path) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--lora_path {lora_path}: no adapter_config.json there")
    model = peft.load_adapter(model, str(lora_path))
    return peft.merge_adapter(model)


def quantize_for_inference(model: Any, quant_type: str) -> Any:
    """Quantize with the installed quantizer plugin that handles ``quant_type`` (as
    ``from_pretrained(quant_type=)`` does, but after an adapter is merged)."""
    from ..modeling.auto import quantize_model
    from ..plugin.manager import get_plugin_manager

    known = get_plugin_manager().registry.all_names("quantizer")  # quant types and aliases
    if quant_type not in known:
        raise ValueError(f"unknown quant_type '{quant_type}'; installed quantizers handle: "
                         f"{', '.join(known) or 'none (install paddlellm-quant)'}")
    return quantize_model(model, quant_type)
