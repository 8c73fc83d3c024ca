"""Per-tensor merge parameters with mergekit's semantics.

A setting is a scalar, a *gradient* (a list of scalars), a conditional ``{filter, value}`` or
a list of conditionals. For a tensor in layer ``i`` of ``N``, ``t = i / (N - 1)`` (``1`` when
``N == 1``); tensors outside the layer stack (embeddings, final norm, head) use ``t = 0``.
A numeric gradient is interpolated piecewise-linearly at ``t`` over its evenly spaced
anchors; a list of booleans/strings selects ``values[int(t * (len - 1))]``. Conditionals are
tried in order; the first whose ``filter`` is a substring of the tensor name (or ``*`` /
absent) applies. Precedence: the model's own ``parameters``, then the global ones, then the
method's default; a required parameter that resolves nowhere is an error.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import MergeError

#: how a parameter attaches: one value per merge ("shared"), one per input model ("input"),
#: or one per input other than the base ("non_base")
SCOPES = ("shared", "input", "non_base")
_REQUIRED = object()


@dataclass(frozen=True)
class ParamSpec:
    name: str
    type: type
    scope: str = "shared"
    default: Any = _REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def validate(self, value: Any) -> Any:
        if value is None:
            return None
        try:
            if self.type is bool:
                if isinstance(value, str):
                    if value.lower() in ("true", "1", "yes"):
                        return True
                    if value.lower() in ("false", "0", "no"):
                        return False
                    raise ValueError(value)
                return bool(value)
            if self.type is str:
                return str(value)
            return self.type(value)
        except (TypeError, ValueError):
            raise MergeError(f"parameter '{self.name}': cannot read {value!r} as "
                             f"{self.type.__name__}") from None


_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.")


def layer_index(tensor_name: str) -> int | None:
    """The decoder-layer index in a Hugging Face tensor name, or ``None``."""
    m = _LAYER.search(tensor_name)
    return int(m.group(1)) if m else None


def layer_t(tensor_name: str, num_layers: int) -> float:
    """mergekit's gradient position of a tensor."""
    idx = layer_index(tensor_name)
    if idx is None:
        return 0.0
    return idx / (num_layers - 1) if num_layers > 1 else 1.0


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (bool, int, float, str))


def evaluate_setting(tensor_name: str, setting: Any, t: float,
                     validate: Callable[[Any], Any]) -> Any:
    """Resolve one setting (scalar / gradient / conditional(s)) for a tensor; ``None`` if no
    conditional matches."""
    if isinstance(setting, Mapping):
        if "value" not in setting:
            raise MergeError(f"conditional parameter {dict(setting)!r} needs a 'value' key")
        setting = [setting]
    if _is_scalar(setting):
        return validate(setting)
    if isinstance(setting, Sequence):
        if not setting:
            return None
        if all(_is_scalar(e) for e in setting):
            values = [validate(e) for e in setting]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if not numeric:
                return values[int(t * (len(values) - 1))]
            scaled = t * (len(values) - 1)
            i0 = int(scaled)
            i1 = min(len(values) - 1, i0 + 1)
            frac = scaled - i0
            return validate((1 - frac) * values[i0] + frac * values[i1])
        for cond in setting:
            if not isinstance(cond, Mapping) or "value" not in cond:
                raise MergeError(f"bad parameter setting {setting!r}: a list must hold either "
                                 "scalars (a gradient) or {filter, value} mappings")
            filt = cond.get("filter")
            if filt in (None, "*") or (tensor_name and str(filt) in tensor_name):
                return evaluate_setting(tensor_name, cond["value"], t, validate)
        return None
    raise MergeError(f"unexpected parameter setting {setting!r}")


def resolve(spec: ParamSpec, scopes: Sequence[Mapping[str, Any] | None], tensor_name: str,
            t: float, where: str = "") -> Any:
    """The value of one parameter for one tensor, from the highest-precedence scope."""
    for scope in scopes:
        if scope and spec.name in scope:
            value = evaluate_setting(tensor_name, scope[spec.name], t, spec.validate)
            if value is not None:
                return value
    if spec.required:
        raise MergeError(f"missing required parameter '{spec.name}' for "
                         f"{where + '.' if where else ''}{tensor_name}")
    return spec.default


def resolve_all(specs: Sequence[ParamSpec], *, tensor_name: str, t: float,
                global_params: Mapping[str, Any] | None,
                model_params: Sequence[Mapping[str, Any] | None],
                model_names: Sequence[str], is_base: Sequence[bool]) -> dict[str, Any]:
    """Resolve a method's parameters for one tensor.

    Shared parameters become scalars; per-input ones become lists in the order of the
    inputs the method receives (``non_base`` lists skip the base model).
    """
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.scope == "shared":
            out[spec.name] = resolve(spec, [global_params], tensor_name, t)
            continue
        values = []
        for params, name, base in zip(model_params, model_names, is_base):
            if base and spec.scope == "non_base":
                continue
            values.append(resolve(spec, [params, global_params], tensor_name, t, where=name))
        out[spec.name] = values
    return out


def check_known(specs: Sequence[ParamSpec], given: Mapping[str, Any] | None, where: str,
                method: str) -> None:
    """An unknown parameter name is an error listing the valid ones."""
    valid = {s.name for s in specs} | {"int8_mask"}  # mergekit's int8_mask: accepted, no-op
    for key in given or {}:
        if key not in valid:
            raise MergeError(f"unknown parameter '{key}' in {where} for merge method "
                             f"'{method}'; valid: {', '.join(sorted(valid))}")
