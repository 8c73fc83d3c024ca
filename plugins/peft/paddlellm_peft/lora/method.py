"""The LoRA method: wrap target linears, save/load the peft format, merge.

peft keys (torch layout): ``base_model.model.<HF path>.lora_A.weight (r, in)``,
``lora_B.weight (out, r)``, DoRA's ``lora_magnitude_vector (out,)``; MoSLoRA's mixer has no
peft equivalent and is saved under our own key ``lora_AB.weight (r, r)`` (torch layout:
``delta = B @ AB @ A``), marked ``"lora_use_mixer": true`` in ``adapter_config.json``.
A PiSSA adapter is saved as peft saves one converted for the original base
(``path_initial_model_for_weight_conversion``): rank ``2r`` with
``A = [A'; A0]``, ``B = [B', -B0]``, so it loads on the unmodified base anywhere.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import paddle

from .. import common
from .config import LoraConfig
from .layer import LoraLinear

LEAVES = ("lora_A.weight", "lora_B.weight", "lora_AB.weight", "lora_magnitude_vector",
          "lora_magnitude_vector.weight")
PISSA_TOL = 1e-4


def lora_layers(model) -> list[tuple[str, LoraLinear]]:
    return [(p, l) for p, l in model.named_sublayers() if isinstance(l, LoraLinear)]


def _accept(layer) -> bool:
    """Linear base layers (or already-quantized ones exposing in/out features)."""
    if hasattr(layer, "adapter_enabled"):
        return False
    return common.is_linear(layer) or (hasattr(layer, "in_features")
                                       and hasattr(layer, "out_features"))


def _wrap(model, path: str, layer, *, r: int, alpha: float, config: LoraConfig,
          use_dora: bool, use_mixer: bool) -> LoraLinear:
    base = common.wrap_base(layer, "lora")
    new = LoraLinear(base, r=r, alpha=alpha, dropout=config.lora_dropout, rslora=config.rslora,
                     use_dora=use_dora, use_mixer=use_mixer,
                     lora_plus_scale=config.lora_plus_scale)
    common.replace_module(model, path, new)
    return new


class LoraMethod:
    name = "lora"
    peft_type = "LORA"
    config_class = LoraConfig

    # -- apply -----------------------------------------------------------------------------
    def apply(self, model, config: LoraConfig):
        for path, layer in common.find_targets(model, config.target_modules, _accept):
            new = _wrap(model, path, layer, r=config.lora_rank, alpha=config.lora_alpha,
                        config=config, use_dora=config.use_dora, use_mixer=config.lora_use_mixer)
            if config.pissa:
                new.pissa_init()
        return model

    # -- save ------------------------------------------------------------------------------
    def save_adapter(self, model, directory: str) -> None:
        layers = lora_layers(model)
        if not layers:
            raise common.AdapterError("the model has no LoRA layers to save")
        if any(l.merged for _, l in layers):
            raise common.AdapterError("LoRA layers are merged into the base weights; unmerge "
                                      "before saving the adapter")
        tensors: dict[str, np.ndarray] = {}
        pissa = any(l.pissa_init_weights is not None for _, l in layers)
        for path, l in layers:
            a = l.lora_A.astype("float32").numpy()  # (in, r)
            b = l.lora_B.astype("float32").numpy()  # (r, out)
            if l.pissa_init_weights is not None:  # peft's conversion to a plain LoRA
                a0, b0 = l.pissa_init_weights
                a, b = np.concatenate([a, a0], axis=1), np.concatenate([b, -b0], axis=0)
            tensors[common.peft_key(model, path, "lora_A.weight")] = a.T  # (r, in)
            tensors[common.peft_key(model, path, "lora_B.weight")] = b.T  # (out, r)
            if l.lora_AB is not None:
                tensors[common.peft_key(model, path, "lora_AB.weight")] = (
                    l.lora_AB.astype("float32").numpy().T)  # (r, r)
            if l.lora_magnitude is not None:
                tensors[common.peft_key(model, path, "lora_magnitude_vector")] = (
                    l.lora_magnitude.astype("float32").numpy())  # (out,)
        first = layers[0][1]
        r, alpha = first.r, first.lora_alpha
        if pissa:  # rank doubles; alpha keeps the scaling
            r, alpha = 2 * r, alpha * (2 ** 0.5 if first.rslora else 2)
        extra: dict[str, Any] = {}
        if first.use_mixer:
            extra["lora_use_mixer"] = True
        config = common.peft_lora_common_config(
            model, self.peft_type, [p for p, _ in layers], r=r, lora_alpha=alpha,
            lora_dropout=first.lora_dropout_p, use_rslora=first.rslora, use_dora=first.use_dora,
            bias="none", fan_in_fan_out=common.fan_in_fan_out(model), init_lora_weights=True,
            modules_to_save=None,
            rank_pattern={}, alpha_pattern={}, **extra)
        common.write_adapter(directory, config, tensors)

    # -- load ------------------------------------------------------------------------------
    def load_adapter(self, model, directory: str):
        cfg, tensors = common.read_adapter(directory)
        where = f"{directory}/{common.ADAPTER_CONFIG}"
        for key, ok in (("bias", lambda v: v in (None, "none")),
                        ("modules_to_save", lambda v: not v),
                        ("alpha_pattern", lambda v: not v),
                        ("fan_in_fan_out", lambda v: bool(v) == common.fan_in_fan_out(model))):
            if not ok(cfg.get(key)):
                raise common.AdapterError(f"{where}: {key}={cfg.get(key)!r} is not supported")
        by_module: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            path, leaf = common.split_peft_key(model, key, LEAVES)
            by_module.setdefault(path, {})[leaf.replace("lora_magnitude_vector.weight",
                                                       "lora_magnitude_vector")] = value
        existing = dict(lora_layers(model))
        if existing and set(existing) != set(by_module):
            missing = sorted(set(existing) ^ set(by_module))
            raise common.AdapterError(f"{directory}: the adapter's modules differ from the "
                                      f"model's LoRA layers (e.g. {', '.join(missing[:4])})")
        alpha = float(cfg.get("lora_alpha", 8))
        use_dora = bool(cfg.get("use_dora", False))
        config = LoraConfig(lora_rank=int(cfg.get("r", 8)), lora_alpha=alpha,
                            lora_dropout=float(cfg.get("lora_dropout", 0.0) or 0.0),
                            rslora=bool(cfg.get("use_rslora", False)), use_dora=use_dora,
                            lora_use_mixer=bool(cfg.get("lora_use_mixer", False)))
        for path, parts in by_module.items():
            if "lora_A.weight" not in parts or "lora_B.weight" not in parts:
                raise common.AdapterError(f"{directory}: module '{path}' lacks lora_A or lora_B")
            a_t, b_t = parts["lora_A.weight"], parts["lora_B.weight"]  # (r, in), (out, r)
            layer = existing.get(path)
            if layer is None:
                layer = _wrap(model, path, common.get_submodule(model, path), r=a_t.shape[0],
                              alpha=alpha, config=config, use_dora=use_dora,
                              use_mixer="lora_AB.weight" in parts)
            elif layer.pissa_init_weights is not None:
                if a_t.shape[0] != 2 * layer.r:
                    raise common.AdapterError(
                        f"{directory}: module '{path}' has rank {a_t.shape[0]}; a --pissa model "
                        f"(rank {layer.r}, residual base) continues only from its own PiSSA "
                        f"checkpoints (saved with rank {2 * layer.r}); drop --pissa to start "
                        "from this adapter")
                a_t, b_t = _unconvert_pissa(layer, a_t, b_t, directory, path)
            elif a_t.shape[0] != layer.r:
                raise common.AdapterError(f"{directory}: module '{path}' has rank {a_t.shape[0]} "
                                          f"in the adapter but rank {layer.r} in the model "
                                          "(--lora_rank)")
            common.assign(layer.lora_A, a_t.T, f"{path}.lora_A.weight")
            common.assign(layer.lora_B, b_t.T, f"{path}.lora_B.weight")
            if ("lora_AB.weight" in parts) != (layer.lora_AB is not None):
                raise common.AdapterError(f"{directory}: module '{path}': MoSLoRA mixer "
                                          "(lora_AB) present in only one of adapter and model")
            if layer.lora_AB is not None:
                common.assign(layer.lora_AB, parts["lora_AB.weight"].T, f"{path}.lora_AB.weight")
            if ("lora_magnitude_vector" in parts) != (layer.lora_magnitude is not None):
                raise common.AdapterError(f"{directory}: module '{path}': DoRA magnitude present "
                                          "in only one of adapter and model (use_dora differs)")
            if layer.lora_magnitude is not None:
                common.assign(layer.lora_magnitude, parts["lora_magnitude_vector"],
                              f"{path}.lora_magnitude_vector")
        if getattr(model, "peft_config", None) is None:
            model.peft_config = config
        return model

    # -- merge -----------------------------------------------------------------------------
    def merge(self, model, unload: bool = True):
        """Merge every LoRA layer; with ``unload`` replace it by its (merged) base layer."""
        for path, layer in lora_layers(model):
            layer.merge()
            if unload:
                common.replace_module(model, path, layer.base_layer)
        return model

    def unmerge(self, model):
        for _, layer in lora_layers(model):
            layer.unmerge()
        return model

    # -- serving -----------------------------------------------------------------------------
    def load_serving_adapters(self, model, directories):
        """Several adapters unmerged on one base, chosen per token row (``llm serve
        --lora_modules``): see :mod:`.multi`. Returns the rows selector (``set_rows``)."""
        from .multi import load_serving_adapters

        return load_serving_adapters(model, directories)


def _unconvert_pissa(layer: LoraLinear, a_t, b_t, directory, path):
    """A converted PiSSA adapter (rank 2r) back onto a PiSSA-initialised layer (resume)."""
    r = layer.r
    a0, b0 = layer.pissa_init_weights  # (in, r), (r, out)
    if not (np.allclose(a_t[r:], a0.T, atol=PISSA_TOL) and np.allclose(b_t[:, r:], -b0.T, atol=PISSA_TOL)):
        raise common.AdapterError(f"{directory}: module '{path}' has rank {2 * r} but is not this "
                                  "base's PiSSA initialisation; load it without --pissa")
    return a_t[:r], b_t[:, :r]


LORA = LoraMethod()
