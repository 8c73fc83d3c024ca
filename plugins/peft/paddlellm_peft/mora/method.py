"""MoRA as a PEFT method: wrap target linears in :class:`MoraLinear`.

``peft`` has no MoRA format (the authors' fork of peft stores MoRA as a ``LORA`` adapter with
``use_mora``), so paddlellm writes its own, in the same layout as peft's adapters:

* ``adapter_config.json``: ``{"peft_type": "MORA", "task_type": "CAUSAL_LM", "r": 8,
  "mora_type": 6, "mora_dropout": 0.0, "target_modules": [...],
  "base_model_name_or_path": ...}`` (``r``: the LoRA rank whose parameter count is matched);
* ``adapter_model.safetensors``: one float32 tensor ``base_model.model.<HF module>.mora_M``
  of shape ``(r^, r^)`` (torch layout ``(out, in)``) per adapted module; ``r^`` is read from
  the tensor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common import (AdapterError, MergeByLayer, adapter_layers, assign, find_targets,
                      is_linear, linear_base, peft_key, peft_lora_common_config, read_adapter,
                      replace_module, split_peft_key, wrap_base, write_adapter)
from .config import MoraConfig
from .layer import LEAF, MoraLinear

PEFT_TYPE = "MORA"


def mora_layers(model) -> list[tuple[str, MoraLinear]]:
    return adapter_layers(model, MoraLinear)


class Mora(MergeByLayer):
    """The ``mora`` PEFT method."""

    name = "mora"
    label = "MoRA"
    layer_class = MoraLinear
    peft_type = PEFT_TYPE
    config_class = MoraConfig

    def apply(self, model, config: MoraConfig | None = None):
        config = config or MoraConfig()
        for path, layer in find_targets(model, config.target_modules, is_linear):
            replace_module(model, path, MoraLinear(
                wrap_base(layer, self.name), r=config.mora_rank, mora_type=config.mora_type,
                dropout=config.mora_dropout))
        return model

    # -- format ----------------------------------------------------------------------------
    def adapter_config(self, model) -> dict:
        layers = mora_layers(model)
        if not layers:
            raise AdapterError("this model has no MoRA adapters")
        first = layers[0][1]
        return peft_lora_common_config(
            model, PEFT_TYPE, [path for path, _ in layers], r=first.r,
            mora_type=first.mora_type, mora_dropout=first.mora_dropout)

    def adapter_state(self, model) -> dict[str, np.ndarray]:
        return {peft_key(model, path, LEAF): layer.mora_M.astype("float32").numpy()
                for path, layer in mora_layers(model)}

    def save_adapter(self, model, directory: str) -> None:
        write_adapter(directory, self.adapter_config(model), self.adapter_state(model))

    def load_adapter(self, model, directory: str):
        """Wrap the modules named in the file (on a plain model) or fill the model's MoRA
        layers (a resumed run)."""
        config, tensors = read_adapter(directory)
        where = Path(directory) / "adapter_config.json"
        if config.get("peft_type") != PEFT_TYPE:
            raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not "
                               f"{PEFT_TYPE!r}")
        mora_type = config.get("mora_type", 6)
        if mora_type not in (1, 6):
            raise AdapterError(f"{where}: mora_type is {mora_type!r}; paddlellm implements the "
                               "paper's types 1 (sharing) and 6 (RoPE-based)")
        r = config.get("r")
        if not isinstance(r, int) or r <= 0:
            raise AdapterError(f"{where}: r must be a positive integer, got {r!r}")
        if not tensors:
            raise AdapterError(f"{directory}: the adapter holds no tensors")
        modules = {}
        for key, value in tensors.items():
            path, _ = split_peft_key(model, key, (LEAF,))
            if value.ndim != 2 or value.shape[0] != value.shape[1]:
                raise AdapterError(f"{directory}: '{key}' has shape {tuple(value.shape)}; MoRA's "
                                   "matrix is square")
            modules[path] = (key, value)
        existing = dict(mora_layers(model))
        if existing and set(existing) != set(modules):
            missing = sorted(set(existing) ^ set(modules))[:3]
            raise AdapterError(f"{directory}: the adapter's modules differ from the model's "
                               f"MoRA layers (e.g. {missing})")
        for path, (key, value) in modules.items():
            layer = existing.get(path)
            if layer is None:
                base = linear_base(model, path, directory)
                try:
                    layer = MoraLinear(wrap_base(base, self.name), r=r, mora_type=mora_type,
                                       dropout=float(config.get("mora_dropout", 0.0)),
                                       rank=int(value.shape[0]))
                except ValueError as exc:
                    raise AdapterError(f"{directory}: module '{path}': {exc}") from None
                replace_module(model, path, layer)
            assign(layer.mora_M, value, key)
        return model


METHOD = Mora()
