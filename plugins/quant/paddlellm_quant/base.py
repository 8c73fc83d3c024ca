"""The shared part of the weight-only quantizers (RTN, GPTQ, AWQ): options, the
``quantization_config`` they write, and rebuilding their layers when a checkpoint loads.

Other quantizers (SmoothQuant, KV int8, FP8) may subclass :class:`BaseQuantizer` and override
:meth:`BaseQuantizer.quantize_model` / :meth:`BaseQuantizer.prepare_for_loading`.
"""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .layers import WeightOnlyLinear, linear_targets, set_submodule


#: kept in float by default: the output head and MoE routers (tiny, and routing is sensitive)
KEEP_FLOAT = ("lm_head", "gate", "shared_expert_gate")


class QuantOptions(BaseModel):
    """Options every weight-only quantizer takes (``--group_size`` ...)."""

    model_config = ConfigDict(extra="forbid")

    group_size: int = Field(-1, description="input columns per scale; -1 = one scale per output channel")
    modules_to_not_convert: list[str] = Field(
        default_factory=lambda: list(KEEP_FLOAT),
        description="linear layers kept in float (a name, or the last parts of one)")


class CalibratedOptions(QuantOptions):
    """Options of the quantizers that learn from calibration data (GPTQ, AWQ)."""

    min_calibration_tokens: int = Field(
        2048, gt=0, description="warn below max(this, 2 x the widest layer input) calibration tokens")


class QuantizeError(ValueError):
    pass


def standard_layout_config(qc: Mapping[str, Any]) -> bool:
    """``True`` for a GPTQ/AWQ ``quantization_config`` in the published layout; ``False`` for
    this plugin's own earlier layout (``"format": "paddlellm"``, int8/uint8 ``(out, in)``)."""
    return qc.get("format") != "paddlellm"


def validate_options(cls: type[BaseModel], config: Mapping[str, Any] | BaseModel | None,
                     quant_type: str) -> BaseModel:
    """``config`` as ``cls``; unknown keys are an error listing the valid ones."""
    if isinstance(config, cls):
        return config
    if isinstance(config, BaseModel):
        config = config.model_dump()
    values = {k: v for k, v in dict(config or {}).items() if v is not None}
    unknown = sorted(set(values) - set(cls.model_fields))
    if unknown:
        raise QuantizeError(f"unknown option(s) {', '.join(unknown)} for quant_type '{quant_type}'; "
                            f"valid: {', '.join(sorted(cls.model_fields))}")
    try:
        opts = cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"'{'.'.join(str(p) for p in e['loc'])}': {e['msg']}" for e in exc.errors())
        raise QuantizeError(f"invalid options for quant_type '{quant_type}': {problems}") from None
    gs = getattr(opts, "group_size", -1)
    if gs == 0 or gs < -1:
        raise QuantizeError(f"group_size must be -1 (per channel) or positive, got {gs}")
    return opts


class BaseQuantizer:
    """A quantizer following :class:`paddlellm.interfaces.Quantizer`."""

    name: ClassVar[str] = ""
    quant_types: ClassVar[tuple[str, ...]] = ()
    #: the ``quant_method`` written to ``quantization_config``
    quant_method: ClassVar[str] = ""
    needs_calibration: ClassVar[bool] = False
    config_class: ClassVar[type[BaseModel]] = QuantOptions

    def bits_for(self, quant_type: str, opts: BaseModel) -> int:
        return int(getattr(opts, "bits", 8))

    def check_type(self, quant_type: str) -> None:
        if quant_type not in self.quant_types:
            raise QuantizeError(f"quantizer '{self.name}' handles {', '.join(self.quant_types)}, "
                                f"not '{quant_type}'")

    # -- quantizing ------------------------------------------------------------------------
    def quantize(self, model, quant_type: str, calibration: Iterable[Any] | None,
                 config: Mapping[str, Any] | None = None):
        """Quantize ``model`` in place (and return it); ``calibration``: batches of token ids
        ``(B, T)`` (needed when ``needs_calibration``)."""
        self.check_type(quant_type)
        opts = validate_options(self.config_class, config, quant_type)
        batches = list(calibration) if calibration is not None else None
        if self.needs_calibration and not batches:
            raise QuantizeError(f"quant_type '{quant_type}' needs calibration data "
                                "(`llm quantize --calibration_data FILE`)")
        done = (getattr(model, "quantization_config", None) or {}).get("quant_type")
        if done == quant_type:  # e.g. `llm predict --quant_type X` on a checkpoint saved as X
            return model
        if done:
            raise QuantizeError(f"the model is already quantized as '{done}'; load the float "
                                f"checkpoint to quantize it as '{quant_type}'")
        self.quantize_model(model, quant_type, batches, opts)
        from .checkpoint import mark_quantized

        return mark_quantized(model, self.quantization_config(quant_type, opts))

    def quantize_model(self, model, quant_type: str, batches: list | None, opts: BaseModel) -> None:
        raise NotImplementedError

    def quantization_config(self, quant_type: str, opts: BaseModel) -> dict[str, Any]:
        """What ``config.json`` records (enough to rebuild the layers at load time)."""
        qc = {"quant_type": quant_type, "quant_method": self.quant_method,
              "bits": self.bits_for(quant_type, opts), "sym": True,
              "format": "paddlellm", "weight_storage": "int8 (out, in); 4 bits: uint8 (out, in/2), "
                                                       "low nibble = even column"}
        qc.update(opts.model_dump())
        return qc

    # -- loading ---------------------------------------------------------------------------
    def prepare_for_loading(self, model, quantization_config: Mapping[str, Any]):
        """Swap the model's linear layers for empty :class:`WeightOnlyLinear` layers shaped by
        ``quantization_config`` (the checkpoint's tensors are loaded into them next)."""
        qc = quantization_config
        bits, group_size = int(qc["bits"]), int(qc.get("group_size", -1))
        pre_scale = bool(qc.get("pre_scale", False))
        for name, lin in linear_targets(model, qc.get("modules_to_not_convert", KEEP_FLOAT)):
            in_f, out_f = lin.weight.shape
            layer = WeightOnlyLinear(in_f, out_f, bits=bits, group_size=group_size,
                                     bias=lin.bias is not None, pre_scale=pre_scale,
                                     dtype=str(lin.weight.dtype).replace("paddle.", ""))
            set_submodule(model, name, layer)
        return model

    def load_pretrained(self, family: Any, path, quantization_config: Mapping[str, Any],
                        dtype: str = "float32"):
        """A model of ``family`` from the quantized checkpoint at ``path``."""
        from .checkpoint import load_quantized

        if "quant_type" not in quantization_config:  # e.g. transformers' own "fp8" layout
            raise ValueError(f"{path}: quantization_config has quant_method "
                             f"'{quantization_config.get('quant_method')}' but no quant_type: a checkpoint "
                             f"of another tool, whose layout the '{self.name}' quantizer does not read")
        return load_quantized(family, path, self, quantization_config, dtype=dtype)
