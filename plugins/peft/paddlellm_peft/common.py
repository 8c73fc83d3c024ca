"""Helpers every PEFT method shares: target matching, module replacement, peft-format I/O.

* Targets: ``"q_proj,v_proj"`` / ``["q_proj", "v_proj"]`` select modules whose path equals a
  name or ends with ``.<name>`` (peft's rule); a string with regex characters
  (``".*(q|v)_proj"``) must match the whole module path (``re.fullmatch``, peft's rule).
* Names: our module paths follow the LLaMA layout of ``transformers``; the model family's
  weight map (``model.family.rename``) gives the Hugging Face path used in peft's keys
  ``base_model.model.<HF module path>.<leaf>``.
* I/O: ``adapter_config.json`` + ``adapter_model.safetensors`` (tensors in torch layout).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from paddlellm.errors import PaddleLLMError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
#: projections of attention and MLP blocks: the default targets (``qkv_proj`` / ``gate_up_proj``
#: are the fused modules of GPT-2 ``c_attn``, Bloom/ChatGLM ``query_key_value``, Baichuan
#: ``W_pack``, ChatGLM ``dense_h_to_4h``)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "qkv_proj", "o_proj", "gate_proj", "up_proj",
                   "gate_up_proj", "down_proj")
_REGEX_CHARS = set(".*+?[]()|^$\\{}")


class AdapterError(PaddleLLMError, ValueError):
    """A bad adapter directory or a target specification that matches nothing (the CLI
    prints it without a traceback)."""


# --- targets --------------------------------------------------------------------------------

def parse_targets(value: str | Iterable[str] | None) -> tuple[str, ...] | str:
    """A tuple of module names, or one regex string (fullmatch against module paths)."""
    if value is None:
        return DEFAULT_TARGETS
    if not isinstance(value, str) and len(list(value)) == 1:  # ["q_proj,v_proj"] from a flag
        value = list(value)[0]
    if isinstance(value, str):
        text = value.strip()
        if any(c in _REGEX_CHARS for c in text):
            try:
                re.compile(text)
            except re.error as exc:
                raise AdapterError(f"target_modules: invalid regex {text!r}: {exc}") from None
            return text
        names = tuple(n.strip() for n in text.split(",") if n.strip())
    else:
        names = tuple(n.strip() for n in value if str(n).strip())
    if not names:
        raise AdapterError("target_modules is empty")
    return names


def matches(path: str, targets: tuple[str, ...] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def find_targets(model, targets, accept: Callable[[Any], bool]) -> list[tuple[str, Any]]:
    """``[(path, layer)]`` of sublayers matching ``targets`` that ``accept`` takes.

    Matching nothing is an error listing the module names that could be targeted.
    """
    parsed = parse_targets(targets)
    found, candidates = [], set()
    for path, layer in model.named_sublayers():
        if not accept(layer):
            continue
        candidates.add(path.split(".")[-1])
        if matches(path, parsed):
            found.append((path, layer))
    if not found:
        raise AdapterError(f"target_modules {targets!r} matched no layer; layers that can be "
                           f"targeted: {', '.join(sorted(candidates)) or 'none'}")
    return found


def get_submodule(model, path: str):
    layer = model
    for part in path.split("."):
        layer = getattr(layer, part)
    return layer


def replace_module(model, path: str, new) -> None:
    """Put ``new`` at ``path`` (``model.layers.0.self_attn.q_proj``) in ``model``."""
    parent_path, _, leaf = path.rpartition(".")
    parent = get_submodule(model, parent_path) if parent_path else model
    setattr(parent, leaf, new)


def wrap_base(layer, method: str, adapter_name: str = "default"):
    """The base layer to wrap: what a plugin's ``wrap_base_layer_for_adapter`` returns
    (QLoRA: a quantized layer), else ``layer`` itself."""
    from paddlellm.api import get_plugin_manager

    replacement = get_plugin_manager().hook.wrap_base_layer_for_adapter(
        layer=layer, adapter_name=adapter_name, method=method)
    return layer if replacement is None else replacement


def layer_features(layer) -> tuple[int, int]:
    """``(in_features, out_features)`` of a base layer (``paddle.nn.Linear`` or any layer
    exposing ``in_features``/``out_features``)."""
    if hasattr(layer, "in_features") and hasattr(layer, "out_features"):
        return int(layer.in_features), int(layer.out_features)
    weight = getattr(layer, "weight", None)
    if weight is not None and len(weight.shape) == 2:  # paddle.nn.Linear: (in, out)
        return int(weight.shape[0]), int(weight.shape[1])
    raise AdapterError(f"{type(layer).__name__} is not a linear base layer: it must expose "
                       "in_features/out_features (or a 2-D (in, out) weight)")


def is_linear(layer) -> bool:
    import paddle.nn as nn

    return isinstance(layer, nn.Linear)


# --- names ----------------------------------------------------------------------------------

def hf_module_path(model, path: str) -> str:
    """Our module path -> the Hugging Face module path (through the family's weight map)."""
    family = getattr(model, "family", None)
    if family is None or not hasattr(family, "rename"):
        return path
    hf = family.rename(f"{path}.weight", to_hf=True)
    if hf is None or not hf.endswith(".weight"):
        raise AdapterError(f"module '{path}' has no single Hugging Face counterpart in the "
                           f"{family.name} weight map (a fused tensor?), so its adapter cannot be "
                           "saved in the peft format; target other modules")
    return hf[: -len(".weight")]


def our_module_path(model, hf_path: str) -> str:
    family = getattr(model, "family", None)
    if family is None or not hasattr(family, "rename"):
        return hf_path
    ours = family.rename(f"{hf_path}.weight", to_hf=False)
    if ours is None:
        raise AdapterError(f"adapter module '{hf_path}' is not a module of this "
                           f"{family.name} model")
    return ours[: -len(".weight")]


def peft_key(model, path: str, leaf: str) -> str:
    """``base_model.model.<HF path>.<leaf>`` (``leaf`` e.g. ``lora_A.weight``)."""
    return f"{PEFT_PREFIX}{hf_module_path(model, path)}.{leaf}"


def split_peft_key(model, key: str, leaves: Iterable[str]) -> tuple[str, str]:
    """``base_model.model.<HF path>.<leaf>`` -> ``(our module path, leaf)``."""
    if not key.startswith(PEFT_PREFIX):
        raise AdapterError(f"unexpected adapter tensor '{key}' (peft keys start with "
                           f"'{PEFT_PREFIX}')")
    rest = key[len(PEFT_PREFIX):]
    for leaf in sorted(leaves, key=len, reverse=True):
        if rest.endswith("." + leaf):
            return our_module_path(model, rest[: -len(leaf) - 1]), leaf
    raise AdapterError(f"unexpected adapter tensor '{key}'; expected leaves: "
                       f"{', '.join(sorted(leaves))}")


def target_names_for_config(model, paths: list[str]) -> list[str]:
    """``target_modules`` for ``adapter_config.json``: the HF leaf names when every module of
    the model with such a leaf name is adapted (peft's usual form), else the full HF paths."""
    chosen = {hf_module_path(model, p) for p in paths}
    leaves = {h.split(".")[-1] for h in chosen}
    for name, _ in model.named_sublayers():
        try:
            hf = hf_module_path(model, name)
        except AdapterError:  # no HF counterpart (containers, an adapter's inner base layer)
            continue
        if hf.split(".")[-1] in leaves and hf not in chosen:
            return sorted(chosen)
    return sorted(leaves)


# --- files ----------------------------------------------------------------------------------

def fan_in_fan_out(model) -> bool:
    """Whether the family's Hugging Face linears are GPT-2 ``Conv1D`` (weights ``(in, out)``):
    peft then records ``fan_in_fan_out=true``; the adapter tensors keep the usual layout."""
    return bool(getattr(getattr(model, "family", None), "fan_in_fan_out", False))


def base_model_name(model) -> str | None:
    return getattr(model, "name_or_path", None)


def write_adapter(directory: str | Path, config: Mapping[str, Any],
                  tensors: Mapping[str, np.ndarray]) -> None:
    """``adapter_config.json`` and ``adapter_model.safetensors`` (float32, torch layout)."""
    from paddlellm.api import save_state_dict

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_state_dict({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
                    directory, prefix="adapter_model", max_shard_size=2**62)
    (directory / ADAPTER_CONFIG).write_text(json.dumps(dict(config), indent=2) + "\n")


def read_adapter(directory: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(adapter_config, {key: float32 array})`` of a peft-format adapter directory."""
    from paddlellm.api import CheckpointReader
    from paddlellm.api import read_adapter_config

    directory = Path(directory)
    config = read_adapter_config(directory)
    weights = directory / ADAPTER_WEIGHTS
    if not weights.is_file():
        legacy = directory / "adapter_model.bin"
        if not legacy.is_file():
            raise AdapterError(f"no {ADAPTER_WEIGHTS} (or adapter_model.bin) in {directory}")
        weights = legacy
    with CheckpointReader(weights) as reader:
        tensors = {k: reader.get_numpy(k, dtype="float32") for k in reader.keys()}
    return config, tensors


def peft_lora_common_config(model, peft_type: str, paths: list[str], **fields: Any) -> dict:
    """The fields peft's configs share, plus ``fields``."""
    return {"peft_type": peft_type, "task_type": "CAUSAL_LM", "base_model_name_or_path":
            base_model_name(model), "inference_mode": True,
            "target_modules": target_names_for_config(model, paths), **fields}


def to_paddle(array: np.ndarray, like=None):
    import paddle

    t = paddle.to_tensor(np.ascontiguousarray(array))
    return t.astype(like.dtype) if like is not None and t.dtype != like.dtype else t


def assign(param, array: np.ndarray, name: str) -> None:
    """Copy ``array`` into ``param`` (shapes must agree)."""
    if tuple(param.shape) != tuple(array.shape):
        raise AdapterError(f"adapter tensor '{name}' has shape {tuple(array.shape)}, the "
                           f"model expects {tuple(param.shape)} (different rank or model?)")
    param.set_value(to_paddle(array, param))


# --- merging --------------------------------------------------------------------------------

class DeltaWeightMerge:
    """Merging for an adapter layer whose update is ``delta_weight()`` in torch layout
    ``(out, in)`` added to the base's Paddle ``(in, out)`` weight (LoKr, VeRA).

    The layer provides ``base_layer``, ``merged``, ``adapter_enabled``, ``delta_weight()`` and
    a class attribute ``method_label`` (``"LoKr"``) for error messages. Its ``forward`` adds
    ``_update(x)`` (the unmerged update of the input, ``(..., out)``) to the base output; a
    layer with its own training-time behaviour (LoKr's module dropout) overrides it."""

    method_label = "the adapter"

    def forward(self, x):
        y = self.base_layer(x)  # (..., out)
        if self.merged:  # the base weight holds the update
            return self._merged_output(x, y)
        if not self.adapter_enabled:
            return y
        return y + self._update(x).astype(y.dtype)

    def _base_weight(self):
        weight = getattr(self.base_layer, "weight", None)
        if weight is None or len(weight.shape) != 2:
            raise ValueError(f"cannot merge {self.method_label} into a "
                             f"{type(self.base_layer).__name__}: it has no float (in, out) weight")
        return weight

    def _merged_output(self, x, y):
        """The output of a merged layer from the base output ``y (..., out)``: ``y`` itself,
        less the update when the adapter is switched off."""
        import paddle

        if self.adapter_enabled:
            return y
        return y - paddle.matmul(x.astype(y.dtype), self.delta_weight().astype(y.dtype),
                                 transpose_y=True)

    def merge(self) -> None:
        import paddle

        if self.merged:
            return
        weight = self._base_weight()
        with paddle.no_grad():
            weight.set_value(weight + self.delta_weight().T.astype(weight.dtype))  # (in, out)
        self.merged = True

    def unmerge(self) -> None:
        import paddle

        if not self.merged:
            return
        weight = self._base_weight()
        with paddle.no_grad():
            weight.set_value(weight - self.delta_weight().T.astype(weight.dtype))
        self.merged = False


class MergeByLayer:
    """``merge``/``unmerge`` of a PEFT method whose layers (class attribute ``layer_class``,
    e.g. a :class:`DeltaWeightMerge`) merge one by one; ``label`` names the method in errors."""

    layer_class: type
    label: str

    def merge(self, model, unload: bool = True):
        """Add every update to its base weight; with ``unload`` put the plain base layers
        back, else keep the layers (``unmerge`` undoes the merge)."""
        layers = adapter_layers(model, self.layer_class)
        if not layers:
            raise AdapterError(f"this model has no {self.label} adapters")
        for path, layer in layers:
            layer.merge()
            if unload:
                replace_module(model, path, layer.base_layer)
        return model

    def unmerge(self, model):
        for _, layer in adapter_layers(model, self.layer_class):
            layer.unmerge()
        return model


def adapter_layers(model, layer_class: type) -> list[tuple[str, Any]]:
    """``[(path, layer)]`` of the sublayers of ``model`` that are ``layer_class``."""
    return [(path, layer) for path, layer in model.named_sublayers()
            if isinstance(layer, layer_class)]


def linear_base(model, path: str, directory) -> Any:
    """The module at ``path`` that an adapter read from ``directory`` is to wrap; an error
    unless it is a linear layer."""
    base = get_submodule(model, path)
    if not is_linear(base):
        raise AdapterError(f"{directory}: module '{path}' is a {type(base).__name__}, not a "
                           "linear layer")
    return base
