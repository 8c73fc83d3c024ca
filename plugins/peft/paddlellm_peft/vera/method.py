"""VeRA as a PEFT method: wrap target linears in :class:`VeraLinear`; peft's ``VERA`` format.

peft's files: ``adapter_config.json`` (``r``, ``projection_prng_key``, ``save_projection``,
``vera_dropout``, ``d_initial``, ``target_modules``) and ``adapter_model.safetensors`` with
``base_model.model.<HF module>.vera_lambda_b`` / ``.vera_lambda_d`` per adapted module and
the shared projections ``base_model.vera_A (r, max_in)`` / ``base_model.vera_B (max_out, r)``.
We always save the projections (peft's ``save_projection=True``): peft would otherwise
regenerate them with torch's random generator, which paddlellm does not reproduce.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..common import (AdapterError, MergeByLayer, adapter_layers, assign, find_targets,
                      get_submodule, is_linear, layer_features, linear_base, peft_key,
                      peft_lora_common_config, read_adapter, replace_module, split_peft_key,
                      to_paddle, wrap_base, write_adapter)
from .config import VeraConfig
from .layer import LEAVES, VeraLinear, VeraProjections

PEFT_TYPE = "VERA"
KEY_A, KEY_B = "base_model.vera_A", "base_model.vera_B"


def vera_layers(model) -> list[tuple[str, VeraLinear]]:
    return adapter_layers(model, VeraLinear)


def _dtype_name(layer) -> str:
    weight = getattr(layer, "weight", None)
    return str(weight.dtype).replace("paddle.", "") if weight is not None else "float32"


class Vera(MergeByLayer):
    """The ``vera`` PEFT method."""

    name = "vera"
    label = "VeRA"
    layer_class = VeraLinear
    peft_type = PEFT_TYPE
    config_class = VeraConfig

    def apply(self, model, config: VeraConfig | None = None):
        config = config or VeraConfig()
        targets = find_targets(model, config.target_modules, is_linear)
        dims = [layer_features(layer) for _, layer in targets]
        projections = VeraProjections.random(
            config.vera_rank, max(i for i, _ in dims), max(o for _, o in dims),
            config.vera_projection_prng_key, dtype=_dtype_name(targets[0][1]))
        for path, layer in targets:
            replace_module(model, path, VeraLinear(
                wrap_base(layer, self.name), projections, r=config.vera_rank,
                dropout=config.vera_dropout, d_initial=config.vera_d_initial))
        model.vera_projection_prng_key = config.vera_projection_prng_key
        return model

    # -- peft format -----------------------------------------------------------------------
    def adapter_config(self, model) -> dict:
        layers = vera_layers(model)
        if not layers:
            raise AdapterError("this model has no VeRA adapters")
        first = layers[0][1]
        return peft_lora_common_config(
            model, PEFT_TYPE, [path for path, _ in layers], r=first.r,
            projection_prng_key=getattr(model, "vera_projection_prng_key", 0),
            save_projection=True, vera_dropout=first.vera_dropout, d_initial=first.d_initial,
            fan_in_fan_out=False, bias="none", init_weights=True, layers_to_transform=None,
            layers_pattern=None, modules_to_save=None, revision=None, auto_mapping=None)

    def adapter_state(self, model) -> dict[str, np.ndarray]:
        layers = vera_layers(model)
        projections = layers[0][1].projections
        state = {KEY_A: projections.A.astype("float32").numpy(),
                 KEY_B: projections.B.astype("float32").numpy()}
        for path, layer in layers:
            for leaf in LEAVES:
                state[peft_key(model, path, leaf)] = getattr(layer, leaf).astype("float32").numpy()
        return state

    def save_adapter(self, model, directory: str) -> None:
        write_adapter(directory, self.adapter_config(model), self.adapter_state(model))

    def load_adapter(self, model, directory: str):
        """Wrap the modules named in the file with the saved shared projections (on a plain
        model) or fill the model's VeRA layers (a resumed run)."""
        config, tensors = read_adapter(directory)
        where = Path(directory) / "adapter_config.json"
        if config.get("peft_type") != PEFT_TYPE:
            raise AdapterError(f"{where}: peft_type is {config.get('peft_type')!r}, not "
                               f"{PEFT_TYPE!r}")
        if KEY_A not in tensors or KEY_B not in tensors:
            raise AdapterError(
                f"{directory}: the adapter has no shared projections ({KEY_A}, {KEY_B}); it was "
                "saved with save_projection=False and peft would regenerate them with torch's "
                "random generator, which paddlellm cannot reproduce: save it with "
                "save_projection=True")
        A, B = tensors.pop(KEY_A), tensors.pop(KEY_B)
        modules: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            path, leaf = split_peft_key(model, key, LEAVES)
            modules.setdefault(path, {})[leaf] = value
        existing = dict(vera_layers(model))
        if existing:  # resume: the same modules, projections copied into the shared ones
            if set(existing) != set(modules):
                missing = sorted(set(existing) ^ set(modules))[:3]
                raise AdapterError(f"{directory}: the adapter's modules differ from the "
                                   f"model's VeRA layers (e.g. {missing})")
            projections = next(iter(existing.values())).projections
            assign(projections.A, A, KEY_A)
            assign(projections.B, B, KEY_B)
        else:
            dtype = _dtype_name(get_submodule(model, next(iter(modules))))
            projections = VeraProjections(to_paddle(A).astype(dtype), to_paddle(B).astype(dtype))
        r = int(config.get("r", projections.rank))
        for path, leaves in modules.items():
            layer = existing.get(path)
            if layer is None:
                base = linear_base(model, path, directory)
                try:
                    layer = VeraLinear(wrap_base(base, self.name), projections, r=r,
                                       dropout=float(config.get("vera_dropout", 0.0)),
                                       d_initial=float(config.get("d_initial", 0.1)))
                except ValueError as exc:
                    raise AdapterError(f"{directory}: module '{path}': {exc}") from None
                replace_module(model, path, layer)
            if set(leaves) != set(LEAVES):
                raise AdapterError(f"{directory}: module '{path}' has {sorted(leaves)}, "
                                   f"expected {list(LEAVES)}")
            for leaf, value in leaves.items():
                assign(getattr(layer, leaf), value, peft_key(model, path, leaf))
        model.vera_projection_prng_key = int(config.get("projection_prng_key", 0))
        return model


METHOD = Vera()
