"""LoKr as a PEFT method: wrap target linears in :class:`LoKrLinear`; peft's ``LOKR`` format.

peft's files: ``adapter_config.json`` (``r``, ``alpha``, ``rank_pattern``, ``alpha_pattern``,
``decompose_both``, ``decompose_factor``, dropouts, ``target_modules``) and
``adapter_model.safetensors`` with ``base_model.model.<HF module>.lokr_w1`` (or ``lokr_w1_a``/
``lokr_w1_b``) and ``lokr_w2`` (or ``lokr_w2_a``/``lokr_w2_b``) per adapted module.
"""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..common import (AdapterError, MergeByLayer, adapter_layers, assign, find_targets,
                      hf_module_path, is_linear, linear_base, peft_key, peft_lora_common_config,
                      read_adapter, replace_module, split_peft_key, wrap_base, write_adapter)
from .config import LoKrConfig
from .layer import LEAVES, LoKrLinear

PEFT_TYPE = "LOKR"


def pattern_value(patterns: dict, module_path: str, default):
    """peft's ``get_pattern_key``: the first pattern ``p`` with ``(.*\\.)?(p)$`` matching."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module_path):
            return value
    return default


def lokr_layers(model) -> list[tuple[str, LoKrLinear]]:
    return adapter_layers(model, LoKrLinear)


def _layer_options(config: dict, hf_path: str) -> dict:
    """LoKrLinear keyword arguments for one module from a peft ``adapter_config``."""
    r = int(pattern_value(config.get("rank_pattern") or {}, hf_path, config.get("r", 8)))
    alpha = float(pattern_value(config.get("alpha_pattern") or {}, hf_path,
                                config.get("alpha", 8)))
    return dict(r=r, alpha=alpha, decompose_both=bool(config.get("decompose_both", False)),
                decompose_factor=int(config.get("decompose_factor", -1)),
                rank_dropout=float(config.get("rank_dropout", 0.0)),
                module_dropout=float(config.get("module_dropout", 0.0)),
                rank_dropout_scale=bool(config.get("rank_dropout_scale", False)))


class LoKr(MergeByLayer):
    """The ``lokr`` PEFT method."""

    name = "lokr"
    label = "LoKr"
    layer_class = LoKrLinear
    peft_type = PEFT_TYPE
    config_class = LoKrConfig

    def apply(self, model, config: LoKrConfig | None = None):
        config = config or LoKrConfig()
        alpha = config.lokr_alpha if config.lokr_alpha is not None else float(config.lokr_rank)
        peft_like = {"r": config.lokr_rank, "alpha": alpha,
                     "rank_pattern": config.lokr_rank_pattern,
                     "alpha_pattern": config.lokr_alpha_pattern,
                     "decompose_both": config.lokr_decompose_both,
                     "decompose_factor": config.lokr_decompose_factor,
                     "rank_dropout": config.lokr_rank_dropout,
                     "module_dropout": config.lokr_module_dropout,
                     "rank_dropout_scale": config.lokr_rank_dropout_scale}
        for path, layer in find_targets(model, config.target_modules, is_linear):
            options = _layer_options(peft_like, hf_module_path(model, path))
            replace_module(model, path, LoKrLinear(wrap_base(layer, self.name), **options))
        return model

    # -- peft format -----------------------------------------------------------------------
    def adapter_config(self, model) -> dict:
        """peft's LoKr config, read off the layers: the most common rank/alpha as ``r``/
        ``alpha``, the others as ``rank_pattern``/``alpha_pattern`` by full module path."""
        layers = lokr_layers(model)
        if not layers:
            raise AdapterError("this model has no LoKr adapters")
        r = Counter(layer.r for _, layer in layers).most_common(1)[0][0]
        alpha = Counter(layer.alpha for _, layer in layers).most_common(1)[0][0]
        first = layers[0][1]
        paths = [path for path, _ in layers]
        return peft_lora_common_config(
            model, PEFT_TYPE, paths, r=r, alpha=alpha,
            rank_pattern={hf_module_path(model, p): l.r for p, l in layers if l.r != r},
            alpha_pattern={hf_module_path(model, p): l.alpha for p, l in layers
                           if l.alpha != alpha},
            decompose_both=first.decompose_both, decompose_factor=first.decompose_factor,
            rank_dropout=first.rank_dropout, module_dropout=first.module_dropout,
            rank_dropout_scale=first.rank_dropout_scale, use_effective_conv2d=False,
            init_weights=True, exclude_modules=None, layers_to_transform=None,
            layers_pattern=None, modules_to_save=None, revision=None, auto_mapping=None)

    def adapter_state(self, model) -> dict[str, np.ndarray]:
        state = {}
        for path, layer in lokr_layers(model):
            for leaf in layer.shapes:
                state[peft_key(model, path, leaf)] = getattr(layer, leaf).astype("float32").numpy()
        return state

    def save_adapter(self, model, directory: str) -> None:
        write_adapter(directory, self.adapter_config(model), self.adapter_state(model))

    def load_adapter(self, model, directory: str):
        """Wrap the modules named in the file (on a plain model) or fill the model's LoKr
        layers (a resumed run), then copy the weights."""
        config, tensors = read_adapter(directory)
        where = Path(directory) / "adapter_config.json"
        if config.get("peft_type") != PEFT_TYPE:
            raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not "
                               f"{PEFT_TYPE!r}")
        if config.get("use_effective_conv2d") and any("lokr_t2" in k for k in tensors):
            raise AdapterError(f"{where}: convolution LoKr (lokr_t2) is not supported")
        modules: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            path, leaf = split_peft_key(model, key, LEAVES)
            modules.setdefault(path, {})[leaf] = value
        existing = dict(lokr_layers(model))
        if existing and set(existing) != set(modules):
            missing = sorted(set(existing) - set(modules))[:3]
            raise AdapterError(f"{directory}: the adapter's modules differ from the model's "
                               f"LoKr layers (e.g. missing {missing})")
        for path, leaves in modules.items():
            layer = existing.get(path)
            if layer is None:
                base = linear_base(model, path, directory)
                options = _layer_options(config, hf_module_path(model, path))
                layer = LoKrLinear(wrap_base(base, self.name), **options)
                replace_module(model, path, layer)
            if set(leaves) != set(layer.shapes):
                raise AdapterError(
                    f"{directory}: module '{path}' has {sorted(leaves)}, but r={layer.r} with "
                    f"decompose_both={layer.decompose_both} gives {sorted(layer.shapes)}")
            for leaf, value in leaves.items():
                assign(getattr(layer, leaf), value, peft_key(model, path, leaf))
        return model


METHOD = LoKr()
