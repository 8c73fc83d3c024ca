"""Where merge inputs come from: a checkpoint directory, or a base plus a LoRA adapter.

A *source* answers ``keys()``, ``shape(name)``, ``dtype(name)``, ``get(name)`` (float32 for
floating tensors) and ``config()`` (its ``config.json`` or ``{}``); it reads one tensor at a
time. ``"BASE+ADAPTER"`` (mergekit's syntax) is a base with a peft LoRA adapter applied.
"""
from __future__ import annotations

import math
import os
import re
from typing import Any

import numpy as np

from paddlellm.api import read_json

from .errors import MergeError
from .io import FLOATING, Reader

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def read_config(directory: str) -> dict:
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        return {}
    return read_json(path)  # malformed, binary or too deep: an error naming the file


class CheckpointSource:
    """A Hugging Face checkpoint directory, read lazily."""

    def __init__(self, path: str):
        self.path = path
        self.label = path
        self._reader = Reader(path)

    @property
    def config_dir(self) -> str:
        return self.path

    def config(self) -> dict:
        return read_config(self.path)

    def keys(self) -> list[str]:
        return self._reader.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self._reader.shape(name)

    def dtype(self, name: str) -> str:
        return self._reader.dtype(name)

    def get(self, name: str) -> np.ndarray:
        return self._reader.get(name)

    def get_rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        return self._reader.get_rows(name, r0, r1)


class LoraAdapter:
    """A peft LoRA adapter: per target weight, ``scaling * B @ A`` (``(out, r) @ (r, in)``).

    ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``), with peft's
    ``rank_pattern`` / ``alpha_pattern`` overrides; ``fan_in_fan_out`` transposes the delta.
    Non-LoRA tensors in the adapter (``modules_to_save``) replace the base tensor.
    """

    _PREFIX = "base_model.model."

    def __init__(self, path: str):
        self.path = path
        cfg_path = os.path.join(path, ADAPTER_CONFIG)
        if not os.path.exists(cfg_path):
            raise MergeError(f"'{path}' is not a LoRA adapter: no {ADAPTER_CONFIG}")
        self.config = read_json(cfg_path)
        if not isinstance(self.config, dict):
            raise MergeError(f"{cfg_path}: expected a JSON object")
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise MergeError(f"adapter '{path}' is {peft_type}; only LoRA adapters can be merged")
        if self.config.get("use_dora"):
            raise MergeError(f"adapter '{path}' uses DoRA, which this merge does not support")
        weights = os.path.join(path, ADAPTER_WEIGHTS)
        if not os.path.exists(weights):
            raise MergeError(f"adapter '{path}' has no {ADAPTER_WEIGHTS}")
        self.reader = Reader(weights)
        self.pairs: dict[str, tuple[str, str, str]] = {}  # base key -> (A key, B key, module)
        self.replacements: dict[str, str] = {}  # base key -> adapter key (modules_to_save)
        for key in self.reader.keys():
            stripped = key[len(self._PREFIX):] if key.startswith(self._PREFIX) else key
            m = re.match(r"^(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$", stripped)
            if m:
                module = m.group(1)
                a_key, b_key, _ = self.pairs.get(module + ".weight", (None, None, module))
                if m.group(2) == "A":
                    a_key = key
                else:
                    b_key = key
                self.pairs[module + ".weight"] = (a_key, b_key, module)
            elif ".lora_" in stripped or "lora_embedding" in stripped or "lora_magnitude" in stripped:
                raise MergeError(f"adapter '{path}': unsupported tensor {key}")
            else:
                stripped = stripped.replace(".modules_to_save.default.", ".")
                self.replacements[stripped] = key
        for base_key, (a, b, _) in self.pairs.items():
            if a is None or b is None:
                raise MergeError(f"adapter '{path}': {base_key} has lora_A without lora_B or "
                                 "the reverse")

    def _pattern_value(self, pattern_key: str, module: str, default: Any) -> Any:
        for pat, value in (self.config.get(pattern_key) or {}).items():
            if re.match(rf"(.*\.)?({pat})$", module):
                return value
        return default

    def scaling(self, base_key: str) -> float:
        """``lora_alpha / r`` for this module (rsLoRA: ``/ sqrt(r)``)."""
        a_key, _, module = self.pairs[base_key]
        r = self.reader.shape(a_key)[0]
        alpha = self._pattern_value("alpha_pattern", module, self.config.get("lora_alpha", 8))
        return alpha / math.sqrt(r) if self.config.get("use_rslora") else alpha / r

    def rank(self, base_key: str) -> int:
        return self.reader.shape(self.pairs[base_key][0])[0]

    def delta(self, base_key: str, rows: tuple[int, int] | None = None) -> np.ndarray:
        """``scaling * B @ A`` in float32, laid out like the base weight (only ``rows`` of it
        when given)."""
        a_key, b_key, _ = self.pairs[base_key]
        a = self.reader.get(a_key)  # (r, in)
        b = self.reader.get(b_key)  # (out, r)
        s = np.float32(self.scaling(base_key))
        if self.config.get("fan_in_fan_out"):  # the base weight is (in, out): delta.T
            a = a if rows is None else a[:, rows[0]:rows[1]]
            return s * (b @ a).T
        b = b if rows is None else b[rows[0]:rows[1]]
        return s * (b @ a)  # (out, in)

    def base_model_path(self) -> str | None:
        return self.config.get("base_model_name_or_path")


class LoraSource:
    """A base checkpoint with one LoRA adapter merged in, tensor by tensor."""

    def __init__(self, base_path: str, adapter_path: str):
        self.base = CheckpointSource(base_path)
        self.adapter = LoraAdapter(adapter_path)
        self.path = f"{base_path}+{adapter_path}"
        self.label = self.path
        keys = set(self.base.keys())
        missing = [k for k in (*self.adapter.pairs, *self.adapter.replacements) if k not in keys]
        if missing:
            raise MergeError(f"adapter '{adapter_path}' targets tensors missing from base "
                             f"'{base_path}': {', '.join(missing[:5])}"
                             + (" ..." if len(missing) > 5 else ""))
        for key in self.adapter.pairs:
            want = self.base.shape(key)
            got = self._delta_shape(key)
            if tuple(want) != tuple(got):
                raise MergeError(f"adapter '{adapter_path}': delta of {key} has shape {got} but "
                                 f"the base tensor is {tuple(want)}; wrong base model?")

    def _delta_shape(self, key: str) -> tuple[int, int]:
        a_key, b_key, _ = self.adapter.pairs[key]
        shape = (self.adapter.reader.shape(b_key)[0], self.adapter.reader.shape(a_key)[1])
        return shape[::-1] if self.adapter.config.get("fan_in_fan_out") else shape

    @property
    def config_dir(self) -> str:
        return self.base.path

    def config(self) -> dict:
        return self.base.config()

    def keys(self) -> list[str]:
        return self.base.keys()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def dtype(self, name: str) -> str:
        return self.base.dtype(name)

    def get(self, name: str) -> np.ndarray:
        if name in self.adapter.replacements:
            return self.adapter.reader.get(self.adapter.replacements[name])
        x = self.base.get(name)
        if name in self.adapter.pairs and self.base.dtype(name) in FLOATING:
            x = x + self.adapter.delta(name)
        return x

    def get_rows(self, name: str, r0: int, r1: int) -> np.ndarray:
        if name in self.adapter.replacements:
            return self.adapter.reader.get_rows(self.adapter.replacements[name], r0, r1)
        x = self.base.get_rows(name, r0, r1)
        if name in self.adapter.pairs and self.base.dtype(name) in FLOATING:
            x = x + self.adapter.delta(name, (r0, r1))
        return x


def open_source(ref: str) -> CheckpointSource | LoraSource:
    """A directory, or ``BASE+ADAPTER``."""
    if not os.path.isdir(ref) and "+" in ref:
        base, adapter = ref.split("+", 1)
        return LoraSource(base, adapter)
    if os.path.exists(os.path.join(ref, ADAPTER_CONFIG)) and not os.path.exists(
            os.path.join(ref, "config.json")):
        adapter = LoraAdapter(ref)
        base = adapter.base_model_path()
        if base and os.path.isdir(base):
            return LoraSource(base, ref)
        raise MergeError(f"'{ref}' is a LoRA adapter; give its base as BASE+{ref} "
                         "(or --base_model_path with --lora_model_path)")
    return CheckpointSource(ref)
