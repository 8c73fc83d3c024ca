"""A quantizer: round-to-nearest onto the symmetric int8 grid, per output channel.

Simulated ("fake") quantization: each linear weight is replaced by ``round(W / s) * s`` with
``s = max|W[:, j]| / 127`` and kept in float, so the model computes what an int8
weight-only model computes, without the memory saving. ``--quant_type rtn_int8_sim`` in
``llm run`` (under ``--peft``, QLoRA-style) and ``AutoModelForCausalLM.from_pretrained(...,
quant_type="rtn_int8_sim")``; :func:`save_quantized` writes a checkpoint whose
``config.json`` names it, which ``from_pretrained`` loads through :meth:`load_pretrained`.
"""
from __future__ import annotations

import json
from pathlib import Path

import paddle
from pydantic import BaseModel, ConfigDict, Field

QUANT_TYPE = "rtn_int8_sim"


class RTNOptions(BaseModel):
    """Options of ``--quant_type rtn_int8_sim``."""

    model_config = ConfigDict(extra="forbid")

    rtn_skip_modules: list[str] = Field(["lm_head"], description="module names (last part) "
                                        "left in full precision")


def snap_to_grid(weight: paddle.Tensor, bits: int = 8) -> paddle.Tensor:
    """``(in, out)`` weight -> the nearest point of its per-column symmetric grid."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.astype("float32")
    scale = paddle.clip(w.abs().max(axis=0, keepdim=True) / qmax, min=1e-12)  # (1, out)
    return (paddle.round(w / scale).clip(-qmax, qmax) * scale).astype(weight.dtype)


class RTNInt8Sim:
    """Follows ``paddlellm.api.Quantizer``."""

    name = QUANT_TYPE
    quant_types = (QUANT_TYPE,)
    needs_calibration = False
    config_class = RTNOptions

    def quantize(self, model, quant_type, calibration, config):
        options = config if isinstance(config, RTNOptions) else RTNOptions(**dict(config or {}))
        with paddle.no_grad():
            for name, layer in model.named_sublayers():
                if isinstance(layer, paddle.nn.Linear) and \
                        name.split(".")[-1] not in options.rtn_skip_modules:
                    layer.weight.set_value(snap_to_grid(layer.weight))
        model.quantization_config = {"quant_type": QUANT_TYPE, "bits": 8,
                                     "modules_to_not_convert": options.rtn_skip_modules}
        return model

    def prepare_for_loading(self, model, quantization_config):
        # the stored weights are already on the grid, in float: no layer to replace
        model.quantization_config = dict(quantization_config)
        return model

    def load_pretrained(self, family, path, quantization_config, dtype="float32"):
        model = family.from_pretrained(path, dtype=dtype)
        return self.prepare_for_loading(model, quantization_config)


def save_quantized(model, directory: str) -> None:
    """``model.save_pretrained(directory)`` plus its ``quantization_config`` in config.json."""
    model.save_pretrained(directory)
    config_path = Path(directory) / "config.json"
    config = json.loads(config_path.read_text())
    config["quantization_config"] = model.quantization_config
    config_path.write_text(json.dumps(config, indent=2) + "\n")


QUANTIZER = RTNInt8Sim()
