"""SmoothQuant post-training quantization (A8W8) and the static-activation PTQ machinery
shared with FP8.

SmoothQuant (Xiao et al. 2022) migrates activation outliers into the weights with a per input
channel factor ``s_j = max|X_j|^α / max|W_j|^(1-α)``: ``X W = (X diag(s)^-1)(diag(s) W)``.
The division is folded into the preceding norm's weight (and bias) when a norm feeds the
linears (``q/k/v_proj`` after ``input_layernorm``, ``gate/up_proj`` after
``post_attention_layernorm``; one ``s`` per group, from the group's concatenated weights), or
kept in the A8W8 layer's activation quantizer otherwise (``o_proj``, ``down_proj``, post-norm
layers, MoE experts).

α per group: fixed (``smooth_alpha``) or searched (``smooth_search``, after PaddleNLP's
PieceWiseSearch idea): every α on a grid, plus no smoothing at all, is scored by the
quantized group's output error ``||Q(X/s) Q(diag(s) W) - X W||²`` on calibration inputs, and
the best wins. Activation scales are static per tensor (abs-max of the smoothed calibration
inputs), weights are int8 per output channel.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

import numpy as np
import paddle
import paddle.nn as nn
from pydantic import BaseModel, ConfigDict, Field

from .a8w8 import A8W8Linear
from .base import BaseQuantizer
from .calibration import calibration_batches
from .kv_int8 import enable_int8_kv_cache, setup_kv_cache_quant

#: α candidates of the search (``None`` = no smoothing)
ALPHA_GRID: tuple[float | None, ...] = (None, *[round(0.05 * i, 2) for i in range(21)])


# --- math ----------------------------------------------------------------------------------

def smoothing_factors(act_absmax: np.ndarray, weight_absmax: np.ndarray, alpha: float | None,
                      floor: float = 1e-5) -> np.ndarray:
    """``s_j = max|X_j|^α / max|W_j|^(1-α)`` ``(K,)``; ``alpha=None`` gives ones. Channels
    that never fire (or have zero weights) keep ``s_j = 1``."""
    act = np.asarray(act_absmax, dtype=np.float64)
    wmax = np.asarray(weight_absmax, dtype=np.float64)
    if alpha is None:
        return np.ones_like(act)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"smooth_alpha must be in [0, 1], got {alpha}")
    s = np.power(np.maximum(act, floor), alpha) / np.power(np.maximum(wmax, floor), 1.0 - alpha)
    return np.where((act > 0) & (wmax > 0), s, 1.0)


def _fake_int8(x: np.ndarray, scale: np.ndarray | float) -> np.ndarray:
    scale = np.where(np.asarray(scale) > 0, scale, 1.0)
    return np.clip(np.round(x / scale), -127, 127) * scale


def a8w8_error(x: np.ndarray, w: np.ndarray, s: np.ndarray, act_absmax: np.ndarray,
               ref: np.ndarray | None = None) -> float:
    """``||Q(X/s) Q(diag(s) W) - X W||²``: X ``(N, K)`` samples, W ``(K, M)``, s ``(K,)``,
    ``act_absmax`` ``(K,)`` over all calibration rows (sets the static per-tensor scale);
    ``ref``: ``X W`` when already computed."""
    ref = x @ w if ref is None else ref  # (N, M)
    a_scale = float(np.max(act_absmax / s)) / 127.0
    xq = _fake_int8(x / s, a_scale)  # (N, K)
    ws = w * s[:, None]  # (K, M)
    wq = _fake_int8(ws, np.abs(ws).max(axis=0) / 127.0)  # (K, M), per output channel
    diff = xq @ wq - ref
    return float(np.sum(diff * diff))


def search_alpha(x: np.ndarray, w: np.ndarray, act_absmax: np.ndarray,
                 grid: Iterable[float | None] = ALPHA_GRID) -> tuple[float | None, dict]:
    """The α of ``grid`` (``None``: no smoothing) with the least :func:`a8w8_error`."""
    x, w = np.asarray(x, np.float64), np.asarray(w, np.float64)
    wmax, ref = np.abs(w).max(axis=1), x @ w  # (K,), (N, M)
    errors = {a: a8w8_error(x, w, smoothing_factors(act_absmax, wmax, a), act_absmax, ref) for a in grid}
    best = min(errors, key=lambda a: errors[a])
    return best, errors


# --- which linears, grouped by shared input ------------------------------------------------

@dataclass
class LinearRef:
    name: str  # e.g. "model.layers.0.self_attn.q_proj"
    parent: nn.Layer
    attr: str

    @property
    def layer(self) -> nn.Layer:
        return getattr(self.parent, self.attr)


@dataclass
class Group:
    """Linears that read the same input, and the norm producing it (``None``: no norm)."""
    linears: list[LinearRef]
    norm: nn.Layer | None = None
    stats: dict = field(default_factory=dict)


def _refs(prefix: str, parent: nn.Layer, attrs: Iterable[str]) -> list[LinearRef]:
    return [LinearRef(f"{prefix}.{a}", parent, a) for a in attrs if hasattr(parent, a)]


def _mlp_groups(prefix: str, mlp: nn.Layer, norm: nn.Layer | None) -> list[Group]:
    first = ["gate_proj", "up_proj", "gate_up_proj"] if getattr(mlp, "gated", False) else ["up_proj"]
    return [Group(_refs(prefix, mlp, first), norm), Group(_refs(prefix, mlp, ["down_proj"]))]


def linear_groups(model: nn.Layer) -> list[Group]:
    """Groups of the decoder's linears (``lm_head``, embeddings projections and MoE routers
    stay float). Norms are folded only where they feed exactly one group (pre-norm layers)."""
    groups: list[Group] = []
    for i, layer in enumerate(model.model.layers):
        p = f"model.layers.{i}"
        fold = getattr(layer, "pre_norm", True)
        attn = layer.self_attn
        own = getattr(attn, "projection_groups", None)  # an attention block of a family's own
        if own is not None:  # (Yuan: q/k read the filter's norm, v the layer's input norm)
            for norm, names in own(layer.input_layernorm if fold else None):
                groups.append(Group(_refs(f"{p}.self_attn", attn, names), norm))
        else:
            groups.append(Group(_refs(f"{p}.self_attn", attn, ["q_proj", "k_proj", "v_proj", "qkv_proj"]),
                                layer.input_layernorm if fold else None))
        groups.append(Group(_refs(f"{p}.self_attn", attn, ["o_proj"])))
        mlp = layer.mlp
        if hasattr(mlp, "experts"):  # MoE: each expert sees its own tokens; no folding
            for e, expert in enumerate(mlp.experts):
                for g in _mlp_groups(f"{p}.mlp.experts.{e}", expert, None):
                    groups.extend(Group([r]) for r in g.linears)
            if mlp.shared_expert is not None:
                groups.extend(_mlp_groups(f"{p}.mlp.shared_expert", mlp.shared_expert, None))
        else:
            groups.extend(_mlp_groups(f"{p}.mlp", mlp, layer.post_attention_layernorm if fold else None))
    return [g for g in groups if g.linears]


# --- calibration ---------------------------------------------------------------------------

def collect_group_inputs(model: nn.Layer, groups: list[Group], calibration: Iterable[Any],
                         max_rows: int = 512) -> int:
    """Run the calibration batches; per group store ``absmax`` ``(K,)`` of its input over all
    real (unpadded) tokens and up to ``max_rows`` input rows ``(N, K)``. Returns tokens seen."""
    state: dict[str, Any] = {"mask": None}

    def make_hook(group: Group):
        def hook(_layer, inputs):
            x = inputs[0].detach().astype("float32").reshape([-1, inputs[0].shape[-1]]).numpy()
            if state["mask"] is not None:
                x = x[state["mask"]]
            if x.shape[0] == 0:
                return None
            st = group.stats
            amax = np.abs(x).max(axis=0)
            st["absmax"] = amax if "absmax" not in st else np.maximum(st["absmax"], amax)
            rows = st.setdefault("rows", [])
            have = sum(r.shape[0] for r in rows)
            if have < max_rows:
                rows.append(x[: max_rows - have].astype(np.float64))
            return None
        return hook

    handles = [g.linears[0].layer.register_forward_pre_hook(make_hook(g)) for g in groups]
    tokens = 0
    try:
        with paddle.no_grad():
            for ids, mask in calibration_batches(calibration):
                state["mask"] = None if mask is None else mask.numpy().reshape(-1).astype(bool)
                tokens += int(ids.size if mask is None else state["mask"].sum())
                model(ids, attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    if tokens == 0:
        raise ValueError("calibration data is empty: static activation scales need calibration text")
    return tokens


# --- applying it to a model ----------------------------------------------------------------

def _weight(ref: LinearRef) -> np.ndarray:
    return ref.layer.weight.detach().astype("float32").numpy().astype(np.float64)  # (K, M)


def _fold_into_norm(norm: nn.Layer, s: np.ndarray) -> None:
    """norm(x) / s: divide the norm's scale (and bias) by ``s``."""
    w = norm.weight.detach().astype("float32").numpy().astype(np.float64)
    new = (1.0 + w) / s - 1.0 if getattr(norm, "unit_offset", False) else w / s
    norm.weight.set_value(paddle.to_tensor(new.astype(np.float32)).astype(norm.weight.dtype))
    if getattr(norm, "bias", None) is not None:
        b = norm.bias.detach().astype("float32").numpy().astype(np.float64) / s
        norm.bias.set_value(paddle.to_tensor(b.astype(np.float32)).astype(norm.bias.dtype))


def quantize_static(model: nn.Layer, calibration: Iterable[Any],
                    make_layer: Callable[[nn.Linear, float, paddle.Tensor | None], nn.Layer],
                    smooth: bool = True, alpha: float = 0.5, search: bool = True,
                    max_rows: int = 512, skip: Iterable[str] = ()) -> dict[str, Any]:
    """Replace the decoder's linears by static-activation quantized layers, in place.

    ``make_layer(linear, act_absmax, smooth_scale)`` builds one layer (``smooth_scale`` is
    ``None`` when the smoothing went into a norm or is off). Linears named (or ending) as in
    ``skip`` stay float (with the group's smoothing folded into their weight). Returns a report:
    ``{"alphas": {first linear name: α or None}, "modules_to_not_convert": [...], "tokens": n}``.
    """
    groups = linear_groups(model)
    tokens = collect_group_inputs(model, groups, calibration, max_rows=max_rows)
    alphas: dict[str, float | None] = {}
    skipped: list[str] = []
    for g in groups:
        if "absmax" not in g.stats:  # e.g. an MoE expert no calibration token reached
            skipped.extend(r.name for r in g.linears)
            continue
        act_absmax = g.stats["absmax"].astype(np.float64)  # (K,)
        w = np.concatenate([_weight(r) for r in g.linears], axis=1)  # (K, sum M)
        if not smooth:
            a = None
        elif search:
            a, _ = search_alpha(np.concatenate(g.stats["rows"]), w, act_absmax)
        else:
            a = alpha
        alphas[g.linears[0].name] = a
        s = smoothing_factors(act_absmax, np.abs(w).max(axis=1), a)  # (K,)
        act_max = float(np.max(act_absmax / s))
        in_layer = None
        if a is not None and g.norm is not None:
            _fold_into_norm(g.norm, s)
            for r in g.linears:
                lin = r.layer
                lin.weight.set_value((lin.weight.astype("float32")
                                      * paddle.to_tensor(s.astype(np.float32)).unsqueeze(-1)).astype(lin.weight.dtype))
        elif a is not None:
            in_layer = paddle.to_tensor(s.astype(np.float32))
        for r in g.linears:
            if _matches(r.name, skip):  # stays float; a folded norm's s is already in its weight
                continue
            setattr(r.parent, r.attr, make_layer(r.layer, act_max, in_layer))
        g.stats.clear()
    return {"alphas": alphas, "modules_to_not_convert": skipped, "tokens": tokens}


def prepare_static(model: nn.Layer, empty_layer: Callable[[nn.Linear], nn.Layer],
                   modules_to_not_convert: Iterable[str] = ()) -> int:
    """Swap the linears :func:`quantize_static` would quantize for empty quantized layers
    (before loading a quantized state dict). Returns the number replaced."""
    n = 0
    for g in linear_groups(model):
        for r in g.linears:
            if not _matches(r.name, modules_to_not_convert):
                setattr(r.parent, r.attr, empty_layer(r.layer))
                n += 1
    return n


def a8w8_layer(linear: nn.Linear, act_absmax: float, smooth_scale: paddle.Tensor | None) -> A8W8Linear:
    return A8W8Linear.from_linear(linear, act_absmax, smooth_scale)


def empty_a8w8_layer(linear: nn.Linear) -> A8W8Linear:
    k, m = linear.weight.shape
    return A8W8Linear(k, m, linear.bias is not None)


def smooth_quantize(model: nn.Layer, calibration: Iterable[Any], smooth: bool = True,
                    alpha: float = 0.5, search: bool = True, max_rows: int = 512) -> dict[str, Any]:
    """SmoothQuant A8W8 of ``model`` in place; see :func:`quantize_static` for the report."""
    return quantize_static(model, calibration, a8w8_layer, smooth=smooth, alpha=alpha,
                           search=search, max_rows=max_rows)


# --- the quantizer (a8w8, a8w8c8) ------------------------------------------------------------

def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.endswith("." + p) for p in patterns)


class SmoothQuantOptions(BaseModel):
    """Options of ``a8w8`` / ``a8w8c8`` (``llm quantize --smooth_alpha 0.6`` ...)."""

    model_config = ConfigDict(extra="forbid")

    smooth: bool = Field(True, description="SmoothQuant: migrate activation outliers into the weights")
    smooth_alpha: float = Field(0.5, ge=0.0, le=1.0, description="migration strength α (used when smooth_search is off)")
    smooth_search: bool = Field(True, description="search α per layer group (grid 0..1 step 0.05, and no smoothing) "
                                                  "minimising the quantized output error on calibration inputs")
    calibration_rows: int = Field(512, gt=0, description="input rows per layer group kept for the α search")
    kv_cache_quant: Literal["none", "static", "dynamic"] | None = Field(
        None, description="int8 KV cache: static per-head scales, dynamic per-token scales, or none "
                          "(default: static for a8w8c8, none for a8w8)")
    modules_to_not_convert: list[str] = Field(default_factory=list, description="linears kept in float "
                                              "(lm_head, embeddings and MoE routers always are)")


class StaticPTQQuantizer(BaseQuantizer):
    """Shared by SmoothQuant A8W8 and FP8: static activation scales from calibration, the
    linears of the decoder blocks replaced, optional int8 KV cache."""

    needs_calibration = True
    default_kv: dict[str, str] = {}

    def make_layer(self, linear, act_absmax, smooth_scale):
        raise NotImplementedError

    def empty_layer(self, linear):
        raise NotImplementedError

    def smoothing(self, opts) -> dict[str, Any]:
        return {"smooth": False}

    def quantize_model(self, model, quant_type, batches, opts) -> None:
        skip = list(opts.modules_to_not_convert)
        report = quantize_static(model, batches, self.make_layer, skip=skip,
                                 max_rows=getattr(opts, "calibration_rows", 512), **self.smoothing(opts))
        opts.modules_to_not_convert = sorted(set(skip) | set(report["modules_to_not_convert"]))
        kv = opts.kv_cache_quant or self.default_kv.get(quant_type, "none")
        opts.kv_cache_quant = setup_kv_cache_quant(model, kv, batches) or "none"
        model.quantization_report = report

    def quantization_config(self, quant_type, opts) -> dict[str, Any]:
        qc = super().quantization_config(quant_type, opts)
        qc.update(activation_scheme="static", weight_storage=self.weight_storage)
        return qc

    def describe(self, model) -> str:
        """One line for ``llm quantize``'s output: compute path, KV cache, chosen α."""
        qc = getattr(model, "quantization_config", {})
        report = getattr(model, "quantization_report", {})
        lines = [f"{qc.get('quant_type')}: {self.compute}; KV cache: "
                 f"{'int8 ' + qc['kv_cache_quant'] if qc.get('kv_cache_quant', 'none') != 'none' else 'float'}"]
        alphas = report.get("alphas", {})
        if alphas and qc.get("smooth", False):
            chosen = [a for a in alphas.values() if a is not None]
            how = "searched" if qc.get("smooth_search") else "fixed"
            lines.append(f"SmoothQuant α ({how}) over {len(alphas)} layer groups: "
                         + (f"min {min(chosen):.2f}, mean {np.mean(chosen):.2f}, max {max(chosen):.2f}; " if chosen else "")
                         + f"{len(alphas) - len(chosen)} left unsmoothed")
        return "\n".join(lines)

    def prepare_for_loading(self, model, quantization_config):
        qc = quantization_config
        prepare_static(model, self.empty_layer, qc.get("modules_to_not_convert", ()))
        mode = qc.get("kv_cache_quant", "none")
        if mode not in (None, "none"):
            enable_int8_kv_cache(model, mode)  # static scales come from the checkpoint
        return model


class SmoothQuantQuantizer(StaticPTQQuantizer):
    name = "smoothquant"
    quant_types = ("a8w8", "a8w8c8")
    quant_method = "paddlellm_a8w8"  # ours (a8w8 and a8w8c8): no other tool reads it
    config_class = SmoothQuantOptions
    default_kv = {"a8w8c8": "static"}
    compute = "int8 x int8 GEMM with exact int32 accumulation (Paddle int32 matmul on CPU)"
    weight_storage = ("qweight int8 (out, in), weight_scale (out,), input_scale (1,) per tensor, "
                      "smooth_scale (in,); int8 x int8 -> int32 GEMM")

    def smoothing(self, opts) -> dict[str, Any]:
        return {"smooth": opts.smooth, "alpha": opts.smooth_alpha, "search": opts.smooth_search}

    def make_layer(self, linear, act_absmax, smooth_scale):
        return a8w8_layer(linear, act_absmax, smooth_scale)

    def empty_layer(self, linear):
        return empty_a8w8_layer(linear)


SMOOTHQUANT = SmoothQuantQuantizer()
