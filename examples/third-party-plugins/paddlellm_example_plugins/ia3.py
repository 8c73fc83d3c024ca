"""A PEFT method: IA3 (Liu et al. 2022), learned per-channel scaling of projections.

``y = base(x) * l`` with ``l`` of shape ``(out,)``, initialised to ones, on the modules whose
Hugging Face name ends in one of ``--ia3_target_modules`` (default ``k_proj``, ``v_proj``).
Adapters are saved in the ``peft`` format (``adapter_config.json`` with ``peft_type: IA3``,
``adapter_model.safetensors`` keys ``base_model.model.<HF path>.ia3_l`` of shape
``(out, 1)``), so ``peft`` loads them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import paddle
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file, save_file

from paddlellm.api import ConfigError, get_plugin_manager

PREFIX = "base_model.model."


class IA3Config(BaseModel):
    """Options of ``--peft ia3``."""

    model_config = ConfigDict(extra="forbid")

    ia3_target_modules: list[str] = Field(["k_proj", "v_proj"], description="Hugging Face "
                                          "module names (last part) whose outputs are scaled")


class IA3Linear(paddle.nn.Layer):
    """``base(x) * ia3_l``; exactly ``base(x)`` while ``adapter_enabled`` is False."""

    def __init__(self, base: paddle.nn.Layer) -> None:
        super().__init__()
        self.base = base
        self.adapter_enabled = True
        out_features = base.weight.shape[1]  # Paddle Linear weights are (in, out)
        self.ia3_l = self.create_parameter(
            [out_features], dtype="float32",
            default_initializer=paddle.nn.initializer.Constant(1.0))

    def forward(self, x):
        y = self.base(x)  # (..., out)
        return y * self.ia3_l.astype(y.dtype) if self.adapter_enabled else y


def _hf_path(model, path: str) -> str:
    hf = model.family.rename(f"{path}.weight", to_hf=True)
    return hf[: -len(".weight")] if hf else path


def _parent(model, path: str):
    *parents, leaf = path.split(".")
    layer = model
    for part in parents:
        layer = getattr(layer, part)
    return layer, leaf


def _adapters(model) -> list[tuple[str, IA3Linear]]:
    return [(n, m) for n, m in model.named_sublayers() if isinstance(m, IA3Linear)]


class IA3:
    """Follows ``paddlellm.api.PeftMethod``."""

    name = "ia3"
    peft_type = "IA3"
    config_class = IA3Config

    def apply(self, model, config: IA3Config):
        hook = get_plugin_manager().hook
        targets = [n for n, m in model.named_sublayers()
                   if isinstance(m, paddle.nn.Linear)
                   and _hf_path(model, n).split(".")[-1] in config.ia3_target_modules]
        if not targets:
            raise ConfigError(f"--ia3_target_modules {' '.join(config.ia3_target_modules)} "
                              "matches no linear layer of this model")
        for path in targets:
            parent, leaf = _parent(model, path)
            base = getattr(parent, leaf)
            base = hook.wrap_base_layer_for_adapter(layer=base, adapter_name="default",
                                                    method=self.name) or base
            setattr(parent, leaf, IA3Linear(base))
        model.ia3_config = config
        return model

    def save_adapter(self, model, directory: str) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {f"{PREFIX}{_hf_path(model, n)}.ia3_l":
                   layer.ia3_l.numpy().astype("float32").reshape(-1, 1)  # peft: (out, 1)
                   for n, layer in _adapters(model)}
        save_file(tensors, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {"peft_type": self.peft_type, "task_type": "CAUSAL_LM",
                  "target_modules": sorted(model.ia3_config.ia3_target_modules),
                  "feedforward_modules": [], "fan_in_fan_out": False,
                  "init_ia3_weights": True,
                  "base_model_name_or_path": getattr(model, "name_or_path", None)}
        (out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")

    def load_adapter(self, model, directory: str):
        folder = Path(directory)
        config = json.loads((folder / "adapter_config.json").read_text())
        if not _adapters(model):
            model = self.apply(model, IA3Config(ia3_target_modules=config["target_modules"]))
        tensors = load_file(str(folder / "adapter_model.safetensors"))
        layers = {f"{PREFIX}{_hf_path(model, n)}.ia3_l": layer for n, layer in _adapters(model)}
        if set(tensors) != set(layers):
            raise ConfigError(f"{folder}: adapter tensors do not match this model's IA3 layers "
                              f"({len(tensors)} in the file, {len(layers)} in the model)")
        for key, array in tensors.items():
            layers[key].ia3_l.set_value(paddle.to_tensor(np.asarray(array).reshape(-1)))
        return model

    def merge(self, model):
        """Fold ``l`` into the base weights (``W[:, j] *= l_j``, bias too); plain layers."""
        with paddle.no_grad():
            for path, layer in _adapters(model):
                base, scale = layer.base, layer.ia3_l.astype(layer.base.weight.dtype)
                base.weight.set_value(base.weight * scale.unsqueeze(0))  # (in, out)
                if base.bias is not None:
                    base.bias.set_value(base.bias * scale)
                parent, leaf = _parent(model, path)
                setattr(parent, leaf, base)
        return model


METHOD = IA3()
