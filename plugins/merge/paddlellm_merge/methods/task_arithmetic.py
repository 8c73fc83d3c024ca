"""Task-vector merging: task arithmetic, TIES, DARE and DELLA (mergekit's "generalized task
arithmetic").

For inputs ``x_i`` with base ``b``: ``d_i = sparsify(x_i - b)`` (per-model ``density``),
weighted ``w_i * d_i``. With sign consensus (TIES), the elected sign per entry is that of
``sum_i w_i d_i`` (``"sum"``, the paper) or of ``sum_i sign(w_i d_i)`` (``"count"``), and only
entries agreeing with it are kept (disjoint merge). The mixed delta is divided by the sum of
the weights that contributed (``normalize``), scaled by ``lambda`` and added to ``b``.

=============== ============ =========== =========== ==========
method          sparsify     consensus   normalize   rescale
=============== ============ =========== =========== ==========
task_arithmetic none         no          False       --
ties            trim (top-k) sum         True        False
dare_linear     dare         no          False       True
dare_ties       dare         sum         False       True
della           magprune     sum         True        True
della_linear    magprune     no          False       True
=============== ============ =========== =========== ==========

(defaults as in mergekit). Random methods draw from :func:`~paddlellm_merge.sparsify.tensor_rng`
with the ``seed`` parameter, so a merge is reproducible and independent of ``--n_process``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..errors import MergeError
from ..params import ParamSpec
from ..sparsify import (_rescale, dare, magprune, tensor_rng, trim, trim_count, trim_mask,
                        trim_threshold)


class TaskVectorMerge:
    """One configuration of the family (see the module table)."""

    needs_base = True

    def __init__(self, name: str, sparsify: str | None, consensus: str | None,
                 normalize: bool, rescale: bool):
        self.name = name
        self.sparsify = sparsify
        self.consensus = consensus
        specs = [
            ParamSpec("weight", float, "non_base", help="weight of each task vector"),
            ParamSpec("normalize", bool, "shared", normalize, "divide by the summed weights"),
            ParamSpec("lambda", float, "shared", 1.0, "scale of the merged task vector"),
        ]
        if sparsify:
            specs += [
                ParamSpec("density", float, "non_base", 1.0, "fraction of each delta kept"),
                ParamSpec("rescale", bool, "shared", rescale, "rescale kept entries"),
                ParamSpec("rescale_norm", str, "shared", "inverse",
                          "inverse (1/keep probability, the papers) | l1 | l2 | linf"),
            ]
        if sparsify == "magprune":
            specs.append(ParamSpec("epsilon", float, "non_base", 0.15,
                                   "half-width of the keep-probability range"))
        if sparsify in ("dare", "magprune"):
            specs.append(ParamSpec("seed", int, "shared", 0, "random seed"))
        if consensus:
            specs.append(ParamSpec("consensus", str, "shared", consensus,
                                   "sign election: sum (TIES paper) | count"))
        self.param_specs = tuple(specs)

    def __reduce__(self):  # picklable by name for worker processes
        return (_by_name, (self.name,))

    def chunkable(self, params: Mapping[str, Any]) -> bool:
        """Row blocks can be merged independently unless a whole-tensor norm is restored."""
        return not (self.sparsify and params.get("rescale")
                    and params.get("rescale_norm") not in (None, "inverse"))

    def prepare(self, name: str, params: Mapping[str, Any], bounds: list[tuple[int, int]],
                read) -> dict:
        """Before a row-block merge, TIES needs each delta's global top-k cut-off: one pass
        collects ``|delta|`` into a scratch buffer (one tensor), a second counts, per block,
        how many entries at the cut-off each block keeps (the first ones in row-major order).
        ``read(r0, r1)`` gives the blocks ``(inputs, base)``."""
        params = dict(params)

        def read_delta(i, r0, r1):
            tensors, base = read(r0, r1)
            return tensors[i] - base

        if self.sparsify != "trim":
            return params
        cuts = []
        for i, density in enumerate(params["density"]):
            if density >= 1 or density <= 0:
                cuts.append(None)
                continue
            scratch, offset = None, 0
            for r0, r1 in bounds:
                block = np.abs(read_delta(i, r0, r1)).reshape(-1)
                if scratch is None:  # (numel,) float32: the one full-size buffer
                    scratch = np.empty(block.size // (r1 - r0) * bounds[-1][1], np.float32)
                scratch[offset:offset + block.size] = block
                offset += block.size
            k = trim_count(density, scratch.size)
            thr = trim_threshold(scratch, k)
            del scratch
            counts = []
            for r0, r1 in bounds:
                mag = np.abs(read_delta(i, r0, r1))
                counts.append((int(np.count_nonzero(mag > np.float32(thr))),
                               int(np.count_nonzero(mag == np.float32(thr)))))
            remaining = k - sum(gt for gt, _ in counts)
            quotas = {}
            for (r0, _), (_, eq) in zip(bounds, counts):
                quotas[r0] = min(eq, remaining)
                remaining -= quotas[r0]
            cuts.append((thr, quotas))
        params["_trim"] = cuts
        return params

    def sparsify_delta(self, name: str, index: int, delta: np.ndarray,
                       params: Mapping[str, Any]) -> np.ndarray:
        density = params["density"][index]
        norm = params.get("rescale_norm")
        norm = None if norm in (None, "inverse") else norm
        row = params.get("_rows", (0, 0))[0]
        if self.sparsify == "trim":
            cut = params["_trim"][index] if "_trim" in params else None
            if cut is None:
                return trim(delta, density, rescale=params["rescale"], rescale_norm=norm)
            thr, quotas = cut
            masked = np.where(trim_mask(delta, thr, quotas[row]), delta, np.float32(0))
            return _rescale(delta, masked, density, None) if params["rescale"] else masked
        rng = tensor_rng(params["seed"], name, index, row)
        if self.sparsify == "dare":
            return dare(delta, density, rng, rescale=params["rescale"], rescale_norm=norm)
        return magprune(delta, density, params["epsilon"][index], rng,
                        rescale=params["rescale"], rescale_norm=norm)

    def merge_tensor(self, name: str, tensors: list[np.ndarray], base: np.ndarray | None,
                     params: Mapping[str, Any]) -> np.ndarray:
        if base is None:
            raise MergeError(f"merge method '{self.name}' needs a base model")
        if not tensors:
            return base
        base = base.astype(np.float32, copy=False)
        weights = np.asarray(params["weight"], dtype=np.float32)  # (N,)
        deltas = np.empty((len(tensors), *base.shape), dtype=np.float32)  # (N, *shape)
        for i, x in enumerate(tensors):
            delta = x - base
            if self.sparsify:
                delta = self.sparsify_delta(name, i, delta, params)
            deltas[i] = delta * weights[i]
        wshape = (-1,) + (1,) * base.ndim
        if self.consensus:
            method = params.get("consensus", self.consensus)
            if method == "sum":
                elected = np.where(deltas.sum(axis=0) >= 0, 1.0, -1.0).astype(np.float32)
            elif method == "count":
                elected = np.where(np.sign(deltas).sum(axis=0) >= 0, 1.0, -1.0).astype(np.float32)
            else:
                raise MergeError(f"consensus must be 'sum' or 'count', not '{method}'")
            mask = (np.sign(deltas) == elected).astype(np.float32)  # (N, *shape)
            mixed = (deltas * mask).sum(axis=0)
            divisor = (weights.reshape(wshape) * mask).sum(axis=0)
            divisor[divisor == 0] = 1
        else:
            mixed = deltas.sum(axis=0)
            divisor = np.float32(weights.sum())
            if abs(divisor) < 1e-8:
                divisor = np.float32(1)
        if params["normalize"]:
            mixed = mixed / divisor
        lam = params.get("lambda", 1.0)
        if lam != 1:
            mixed = mixed * np.float32(lam)
        return (base + mixed).astype(np.float32, copy=False)


TASK_ARITHMETIC = TaskVectorMerge("task_arithmetic", None, None, normalize=False, rescale=False)
TIES = TaskVectorMerge("ties", "trim", "sum", normalize=True, rescale=False)
DARE_LINEAR = TaskVectorMerge("dare_linear", "dare", None, normalize=False, rescale=True)
DARE_TIES = TaskVectorMerge("dare_ties", "dare", "sum", normalize=False, rescale=True)
DELLA = TaskVectorMerge("della", "magprune", "sum", normalize=True, rescale=True)
DELLA_LINEAR = TaskVectorMerge("della_linear", "magprune", None, normalize=False, rescale=True)

METHODS = {m.name: m for m in (TASK_ARITHMETIC, TIES, DARE_LINEAR, DARE_TIES, DELLA, DELLA_LINEAR)}


def _by_name(name: str) -> TaskVectorMerge:
    return METHODS[name]
