"""Several LoRA adapters on one base, chosen per token row (``llm serve --lora_modules``).

The served model keeps its plain base weights; every linear that some adapter targets is
wrapped in a :class:`MultiLoraLinear` holding the ``A``/``B`` of each adapter (unmerged). One
:class:`AdapterRows`, shared by all those layers, says which adapter each token row of the
next forward uses (``0``: the base, ``k``: the k-th adapter), so requests for different
adapters run together in one engine step on the one base.

Per layer, with ``K`` adapters padded to one rank ``R`` (zeros beyond an adapter's own rank;
the scaling folded into ``B``)::

    A_cat (in, K*R) = [A_1 | A_2 | ... | A_K]        B_cat (K*R, out) = [s_1 B_1; ...; s_K B_K]
    y = base(x) + ((x @ A_cat) * mask) @ B_cat      mask (N, K*R): row n is one on the R
                                                     columns of row n's adapter, else zero

which is ``y_n = base(x_n) + s_k (x_n A_k) B_k`` for row ``n`` of adapter ``k`` (and the base
output for rows without one): two matmuls over the whole batch. Gathering each row's own
``A``/``B`` instead (``(N, in, R)`` per layer) costs memory proportional to the tokens of a
prefill; the mask form reads each adapter's weights once per step and costs ``K`` times one
adapter's (small) flops, which suits a handful of adapters. Two common steps take short
cuts: a step whose rows all use one adapter runs that adapter alone (unpadded), and a step
without adapter rows, or whose adapters do not target a layer, runs the base layer only.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import paddle
import paddle.nn as nn

from .. import common

#: adapter_config.json keys this loader cannot honour, with the values it accepts
_UNSUPPORTED = (("bias", lambda v: v in (None, "none")),
                ("modules_to_save", lambda v: not v),
                ("alpha_pattern", lambda v: not v))
_LEAVES = ("lora_A.weight", "lora_B.weight", "lora_AB.weight", "lora_magnitude_vector",
           "lora_magnitude_vector.weight")


class AdapterRows:
    """Which adapter each token row of the next forward uses (shared by a model's
    :class:`MultiLoraLinear` layers). ``set_rows(None)``: every row uses the base."""

    def __init__(self, num_adapters: int, rank: int, dtype) -> None:
        self.num_adapters, self.rank, self.dtype = int(num_adapters), int(rank), dtype
        self.single: int | None = None  # every row uses this adapter (0-based slot)
        self.mask: paddle.Tensor | None = None  # (N, K*R) for a mixed step
        self.present: frozenset[int] = frozenset()  # slots used by the mixed step

    def set_rows(self, indices: Sequence[int] | np.ndarray | None) -> None:
        """``indices[n]``: the adapter of token row ``n`` (1-based, 0 = the base)."""
        self.single, self.mask, self.present = None, None, frozenset()
        if indices is None:
            return
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)  # (N,)
        if idx.size == 0 or not idx.any():
            return
        if idx.min() < 0 or idx.max() > self.num_adapters:
            raise ValueError(f"adapter index out of range 0..{self.num_adapters}: "
                             f"{int(idx.min())}..{int(idx.max())}")
        first = int(idx[0])
        if first and (idx == first).all():
            self.single = first - 1
            return
        onehot = np.zeros((idx.size, self.num_adapters + 1), dtype=np.float32)  # (N, K+1)
        onehot[np.arange(idx.size), idx] = 1.0
        mask = np.repeat(onehot[:, 1:], self.rank, axis=1)  # (N, K*R)
        self.mask = paddle.to_tensor(mask).astype(self.dtype)
        self.present = frozenset(int(k) - 1 for k in np.unique(idx) if k)


class MultiLoraLinear(nn.Layer):
    """A linear base layer plus the unmerged LoRA updates of several adapters, applied per
    token row as :class:`AdapterRows` says (see the module docstring). Follows the adapter
    contract: ``adapter_enabled = False`` gives the base output."""

    def __init__(self, base: nn.Layer, rows: AdapterRows,
                 updates: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """``updates``: slot ``k`` -> ``(A (in, r_k), s_k * B (r_k, out))``, float32."""
        super().__init__()
        self.base_layer = base
        self.rows = rows
        self.adapter_enabled = True
        self.in_features, self.out_features = common.layer_features(base)
        weight = getattr(base, "weight", None)
        dtype = (weight.dtype if isinstance(weight, paddle.Tensor) and weight.dtype in (
            paddle.float32, paddle.float16, paddle.bfloat16) else rows.dtype)
        k, r = rows.num_adapters, rows.rank
        a_cat = np.zeros((self.in_features, k * r), dtype=np.float32)  # (in, K*R)
        b_cat = np.zeros((k * r, self.out_features), dtype=np.float32)  # (K*R, out)
        self.lora_A: dict[int, paddle.Tensor] = {}
        self.lora_B: dict[int, paddle.Tensor] = {}
        for slot, (a, b) in updates.items():
            rank = a.shape[1]
            a_cat[:, slot * r:slot * r + rank] = a
            b_cat[slot * r:slot * r + rank] = b
            self.lora_A[slot] = paddle.to_tensor(a).astype(dtype)  # (in, r_k)
            self.lora_B[slot] = paddle.to_tensor(b).astype(dtype)  # (r_k, out), scaled
        self.slots = frozenset(updates)
        self.register_buffer("lora_A_cat", paddle.to_tensor(a_cat).astype(dtype), persistable=False)
        self.register_buffer("lora_B_cat", paddle.to_tensor(b_cat).astype(dtype), persistable=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        y = self.base_layer(x)  # (..., N, out)
        rows = self.rows
        if not self.adapter_enabled:
            return y
        if rows.single is not None:
            if rows.single not in self.slots:
                return y
            h = paddle.matmul(x, self.lora_A[rows.single])  # (..., N, r)
            return y + paddle.matmul(h, self.lora_B[rows.single])  # (..., N, out)
        if rows.mask is None or not (rows.present & self.slots):
            return y
        h = paddle.matmul(x, self.lora_A_cat) * rows.mask  # (..., N, K*R)
        return y + paddle.matmul(h, self.lora_B_cat)  # (..., N, out)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, adapters={sorted(self.slots)}, "
                f"padded_rank={self.rows.rank}")


def _read_updates(model, directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{our module path: (A (in, r), s * B (r, out))}`` of one peft-format LoRA folder,
    checked against the served ``model`` (modules, shapes)."""
    cfg, tensors = common.read_adapter(directory)
    where = f"{directory}/{common.ADAPTER_CONFIG}"
    for key, ok in _UNSUPPORTED:
        if not ok(cfg.get(key)):
            raise common.AdapterError(f"{where}: {key}={cfg.get(key)!r} is not supported")
    if bool(cfg.get("fan_in_fan_out")) != common.fan_in_fan_out(model):
        raise common.AdapterError(f"{where}: fan_in_fan_out={cfg.get('fan_in_fan_out')!r} does "
                                  "not fit the served model's family: its base is another model")
    if cfg.get("use_dora"):
        raise common.AdapterError(f"{directory}: a DoRA adapter rescales the base output and "
                                  "cannot be served unmerged beside others; serve it merged "
                                  "(--lora_path)")
    alpha, rslora = float(cfg.get("lora_alpha", 8)), bool(cfg.get("use_rslora", False))
    by_module: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        try:
            path, leaf = common.split_peft_key(model, key, _LEAVES)
        except common.AdapterError as exc:
            raise common.AdapterError(f"{directory}: {exc} (was the adapter trained on "
                                      "another base?)") from None
        by_module.setdefault(path, {})[leaf] = value
    updates = {}
    for path, parts in sorted(by_module.items()):
        if "lora_A.weight" not in parts or "lora_B.weight" not in parts:
            raise common.AdapterError(f"{directory}: module '{path}' lacks lora_A or lora_B")
        try:
            layer = common.get_submodule(model, path)
            n_in, n_out = common.layer_features(layer)
        except (AttributeError, common.AdapterError):
            raise common.AdapterError(f"{directory}: the adapter targets '{path}', which the "
                                      "served model has no linear layer for: its base is "
                                      "another model") from None
        a_t, b_t = parts["lora_A.weight"], parts["lora_B.weight"]  # (r, in), (out, r)
        if a_t.ndim != 2 or b_t.ndim != 2 or a_t.shape[0] != b_t.shape[1]:
            raise common.AdapterError(f"{directory}: module '{path}': lora_A {a_t.shape} and "
                                      f"lora_B {b_t.shape} do not make a rank-r update")
        if (a_t.shape[1], b_t.shape[0]) != (n_in, n_out):
            raise common.AdapterError(
                f"{directory}: module '{path}' maps {a_t.shape[1]} -> {b_t.shape[0]} features in "
                f"the adapter but {n_in} -> {n_out} in the served model: the adapter was "
                "trained on another base")
        r = a_t.shape[0]
        a = a_t.T  # (in, r)
        if "lora_AB.weight" in parts:  # MoSLoRA: the mixer folds into A
            a = a @ parts["lora_AB.weight"].T  # (in, r) @ (r, r)
        scaling = alpha / (math.sqrt(r) if rslora else r)
        updates[path] = (np.ascontiguousarray(a, dtype=np.float32),
                         np.ascontiguousarray(b_t.T * scaling, dtype=np.float32))  # (r, out)
    if not updates:
        raise common.AdapterError(f"{directory}: the adapter has no LoRA tensors")
    return updates


def load_serving_adapters(model, directories: Sequence[str | Path]) -> AdapterRows:
    """Wrap the linears of ``model`` that the LoRA adapters in ``directories`` target in
    :class:`MultiLoraLinear` layers (adapter ``k`` of the list is index ``k + 1``); returns
    the :class:`AdapterRows` that selects each token row's adapter. The base weights stay as
    they are."""
    per_adapter = [_read_updates(model, str(d)) for d in directories]
    rank = max(a.shape[1] for updates in per_adapter for a, _ in updates.values())
    weight = next((p for p in model.parameters() if p.dtype in (
        paddle.float32, paddle.float16, paddle.bfloat16)), None)
    rows = AdapterRows(len(per_adapter), rank, weight.dtype if weight is not None else "float32")
    paths = sorted({p for updates in per_adapter for p in updates})
    for path in paths:
        if isinstance(common.get_submodule(model, path), MultiLoraLinear):
            raise common.AdapterError(f"the model already serves adapters on '{path}'; load "
                                      "every adapter in one call")
    for path in paths:
        slots = {k: updates[path] for k, updates in enumerate(per_adapter) if path in updates}
        common.replace_module(model, path,
                              MultiLoraLinear(common.get_submodule(model, path), rows, slots))
    return rows
