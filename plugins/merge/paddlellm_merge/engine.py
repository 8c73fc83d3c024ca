"""The streaming merge: plan, check, merge tensor by tensor, write shard by shard.

Memory stays near one tensor per input (plus the output being written) per process: inputs
are read one tensor at a time, merged in float32 and appended to the planned output shard.
``n_process > 1`` merges tensors in worker processes (each reads its own inputs); the main
process writes results in order, with at most ``2 * n_process`` tensors in flight.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from paddlellm.api import TOKENIZER_FILES

from .errors import MergeError
from .io import FLOATING, nbytes_of, parse_size, to_storage, write_streaming
from .params import check_known, layer_index, layer_t, resolve_all
from .sources import open_source
from .spec import MergeSpec

COPY_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES)
#: tensors larger than this (entries) are merged in row blocks of about this size
CHUNK_ELEMENTS = 1 << 20
_ARCH_KEYS = ("model_type", "architectures", "num_hidden_layers", "hidden_size",
              "num_attention_heads", "num_key_value_heads", "vocab_size")


@dataclass
class MergeReport:
    output_path: str
    files: list[str]
    num_tensors: int
    total_bytes: int
    seconds: float
    inputs: list[str] = field(default_factory=list)


def load_method(name: str) -> Any:
    """The registered merge method (unknown names list the installed ones)."""
    from paddlellm.api import get_plugin_manager

    return get_plugin_manager().registry.get("merge_method", name).load()


def _same(a: str, b: str) -> bool:
    return os.path.normpath(a) == os.path.normpath(b)


def _check_architectures(sources: list) -> None:
    ref = sources[0].config()
    for src in sources[1:]:
        cfg = src.config()
        for key in _ARCH_KEYS:
            if key in ref and key in cfg and ref[key] != cfg[key]:
                raise MergeError(
                    f"cannot merge models of different architectures: {key} is {ref[key]!r} in "
                    f"'{sources[0].label}' but {cfg[key]!r} in '{src.label}'")


def _check_tensors(sources: list) -> list[str]:
    ref = sources[0]
    names = ref.keys()
    ref_set = set(names)
    for src in sources[1:]:
        keys = set(src.keys())
        if keys != ref_set:
            missing, extra = sorted(ref_set - keys), sorted(keys - ref_set)
            msg = [f"models have different tensors: '{src.label}' vs '{ref.label}'"]
            if missing:
                msg.append(f"missing {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
            if extra:
                msg.append(f"extra {', '.join(extra[:5])}" + (" ..." if len(extra) > 5 else ""))
            raise MergeError("; ".join(msg))
        for name in names:
            if tuple(src.shape(name)) != tuple(ref.shape(name)):
                raise MergeError(
                    f"shape mismatch for tensor '{name}': {tuple(ref.shape(name))} in "
                    f"'{ref.label}' but {tuple(src.shape(name))} in '{src.label}' (models must "
                    "share architecture and vocabulary)")
    return names


def _num_layers(config: dict, names: list[str]) -> int:
    for key in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(config.get(key), int):
            return config[key]
    idx = [i for i in (layer_index(n) for n in names) if i is not None]
    return max(idx) + 1 if idx else 1


class _Job:
    """Everything a worker needs to merge one tensor (picklable)."""

    def __init__(self, method, sources, base_index: int | None, input_indices: list[int]):
        self.method = method
        self.sources = sources
        self.base_index = base_index
        self.input_indices = input_indices
        self.chunk_elements = CHUNK_ELEMENTS  # fixed here, so workers block the same way

    def run(self, name: str, params: dict | None, out_dtype: str) -> np.ndarray:
        """The merged tensor ``name`` in storage form; large tensors of methods that allow it
        are merged in row blocks of about ``chunk_elements`` entries, read block by block
        (random methods draw per block, so the block size is part of the seeded result)."""
        src0 = self.sources[0]
        if params is None:  # non-floating tensor: copied from the first source
            return src0.get(name)
        shape = tuple(src0.shape(name))
        numel = int(np.prod(shape, dtype=np.int64))
        chunkable = getattr(self.method, "chunkable", None)
        if not (shape and numel > self.chunk_elements and chunkable and chunkable(params)):
            tensors = [self.sources[i].get(name) for i in self.input_indices]
            base = self.sources[self.base_index].get(name) if self.base_index is not None else None
            merged = self.method.merge_tensor(name, tensors, base,
                                              {**params, "_rows": (0, shape[0] if shape else 1)})
            return to_storage(self._finite(name, merged), out_dtype)
        step = max(1, self.chunk_elements // (numel // shape[0]))
        bounds = [(r, min(r + step, shape[0])) for r in range(0, shape[0], step)]
        if hasattr(self.method, "prepare"):
            params = self.method.prepare(name, params, bounds,
                                         lambda r0, r1: self._rows(name, r0, r1))
        out = None
        for r0, r1 in bounds:
            tensors, base = self._rows(name, r0, r1)
            block = to_storage(self._finite(name, self.method.merge_tensor(
                name, tensors, base, {**params, "_rows": (r0, r1)})), out_dtype)
            if out is None:
                out = np.empty(shape, dtype=block.dtype)
            out[r0:r1] = block
        return out

    def _rows(self, name: str, r0: int, r1: int):
        """Rows ``r0:r1`` of the method's inputs and of the base (``None`` without one)."""
        tensors = [self.sources[i].get_rows(name, r0, r1) for i in self.input_indices]
        base = (self.sources[self.base_index].get_rows(name, r0, r1)
                if self.base_index is not None else None)
        return tensors, base

    @staticmethod
    def _finite(name: str, merged: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(merged)):
            raise MergeError(f"merging '{name}' produced NaN/inf (check weights/parameters)")
        return merged


_WORKER_JOB: _Job | None = None


def _worker_init(job: _Job) -> None:
    global _WORKER_JOB
    _WORKER_JOB = job


def _worker_run(args) -> np.ndarray:
    return _WORKER_JOB.run(*args)


class _OrderedFeeder:
    """Keeps up to ``window`` tensors merging in the pool; hands results back in plan order."""

    def __init__(self, pool, plan, window: int):
        self.pool = pool
        self.plan = iter(plan)
        self.window = window
        self.pending: deque = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self.pending) < self.window:
            item = next(self.plan, None)
            if item is None:
                return
            self.pending.append((item[0], self.pool.apply_async(_worker_run, (item,))))

    def next_result(self, name: str) -> np.ndarray:
        got, res = self.pending.popleft()
        if got != name:
            raise MergeError(f"internal: writer asked for {name}, next merged is {got}")
        out = res.get()
        self._fill()
        return out


def merge(spec: MergeSpec, output_path: str, *, n_process: int = 1,
          max_shard_size: str | int = "5GB", copy_file_list: list[str] | None = None,
          prefix: str = "model", log: Callable[[str], None] = print) -> MergeReport:
    """Merge as ``spec`` says into ``output_path`` (a Hugging Face checkpoint directory)."""
    start = time.time()
    method = load_method(spec.merge_method)
    needs_base = bool(getattr(method, "needs_base", False))
    model_refs = [m.model for m in spec.models]
    base_ref = spec.base_model
    if needs_base and not base_ref:
        raise MergeError(f"merge method '{spec.merge_method}' needs a base model: give "
                         "base_model (YAML) or --base_model_path")

    # inputs in the order the method receives them
    base_in_models = [i for i, r in enumerate(model_refs) if base_ref and _same(r, base_ref)]
    order = list(range(len(model_refs)))
    if base_in_models and not needs_base:  # slerp: the base is the t=0 end
        order = base_in_models + [i for i in order if i not in base_in_models]
    refs = [model_refs[i] for i in order]
    params_per_model = [spec.models[i].parameters for i in order]
    is_base = [bool(base_ref) and _same(r, base_ref) for r in refs]
    if needs_base and not base_in_models:
        refs.append(base_ref)
        params_per_model.append(None)
        is_base.append(True)
    if needs_base and len(refs) - 1 < 1:
        raise MergeError(f"'{spec.merge_method}' needs at least one model besides the base")
    if not needs_base and len(refs) < 1:
        raise MergeError("nothing to merge")

    sources = [open_source(r) for r in refs]
    _check_architectures(sources)
    names = _check_tensors(sources)
    base_index = is_base.index(True) if needs_base else None
    input_indices = [i for i in range(len(sources)) if not (needs_base and is_base[i])]

    specs = getattr(method, "param_specs", None)
    if specs is not None and spec.flag_params:  # flags the method does not take: dropped
        keep = {s.name for s in specs} | (set(spec.parameters) - set(spec.flag_params))
        spec.parameters = {k: v for k, v in spec.parameters.items() if k in keep}
        params_per_model = [{k: v for k, v in (p or {}).items()
                             if k in keep or k not in spec.flag_params} or None
                            for p in params_per_model]
    if specs is not None:
        check_known(specs, spec.parameters, "parameters", spec.merge_method)
        for ref, p in zip(refs, params_per_model):
            check_known(specs, p, f"parameters of '{ref}'", spec.merge_method)
    ref_cfg = sources[base_index if base_index is not None else 0].config()
    num_layers = _num_layers(ref_cfg, names)
    out_dtype = spec.output_dtype()

    plan = []  # (name, params or None, dtype)
    for name in names:
        in_dtype = sources[0].dtype(name)
        if in_dtype not in FLOATING:
            plan.append((name, None, in_dtype))
            continue
        t = layer_t(name, num_layers)
        if specs is not None:
            params = resolve_all(specs, tensor_name=name, t=t, global_params=spec.parameters,
                                 model_params=params_per_model, model_names=refs,
                                 is_base=is_base)
        else:  # a third-party method without declared parameters gets the raw settings
            params = dict(spec.parameters)
        plan.append((name, params, out_dtype or in_dtype))

    if os.path.abspath(output_path) in {os.path.abspath(r) for r in refs}:
        raise MergeError(f"--output_path '{output_path}' is one of the inputs")
    parse_size(max_shard_size)
    files_from = sources[base_index if base_index is not None else 0].config_dir
    for fname in copy_file_list or ():
        if not os.path.isfile(os.path.join(files_from, fname)):
            raise MergeError(f"--copy_file_list: '{fname}' not found in {files_from}")
    job = _Job(method, sources, base_index, input_indices)
    layout = [(n, tuple(sources[0].shape(n)), d) for n, _, d in plan]
    log(f"merging {len(plan)} tensors of {len(sources)} checkpoints with "
        f"'{spec.merge_method}' into {output_path} ({max(1, n_process)} process(es))")
    meta = {"merge_method": spec.merge_method}
    if n_process <= 1:
        by_name = {n: (p, d) for n, p, d in plan}
        files = write_streaming(output_path, layout, lambda n: job.run(n, *by_name[n]),
                                max_shard_size=max_shard_size, prefix=prefix, metadata=meta)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(n_process, initializer=_worker_init, initargs=(job,)) as pool:
            feeder = _OrderedFeeder(pool, plan, window=2 * n_process)
            files = write_streaming(output_path, layout, feeder.next_result,
                                    max_shard_size=max_shard_size, prefix=prefix, metadata=meta)
    _copy_files(files_from, output_path, copy_file_list, out_dtype)
    with open(os.path.join(output_path, "merge_config.json"), "w") as f:
        json.dump(spec.to_dict(), f, indent=2)
    total = sum(nbytes_of(tuple(sources[0].shape(n)), d) for n, _, d in plan)
    report = MergeReport(output_path, files, len(plan), total, time.time() - start, refs)
    log(f"wrote {len(plan)} tensors ({total / 1e6:.2f} MB, {len(files)} file(s)) in "
        f"{report.seconds:.1f} s")
    return report


def _copy_files(src_dir: str, out_dir: str, extra: list[str] | None, out_dtype: str | None) -> None:
    for fname in (*COPY_FILES, *(extra or ())):
        src = os.path.join(src_dir, fname)
        if not os.path.isfile(src):
            continue
        shutil.copyfile(src, os.path.join(out_dir, fname))
    cfg_path = os.path.join(out_dir, "config.json")
    if out_dtype and os.path.exists(cfg_path):
        with open(cfg_path) as f:
            cfg = json.load(f)
        keys = [k for k in ("torch_dtype", "dtype") if k in cfg] or ["torch_dtype"]
        for k in keys:
            cfg[k] = out_dtype
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2)
