"""Merging LoRA adapters of one base into one adapter, exactly, by concatenation.

For adapters ``i`` with weights ``w_i`` (divided by ``sum w`` when ``normalize``), scalings
``s_i`` and factors ``A_i (r_i, in)``, ``B_i (out, r_i)``, the merged adapter has rank
``R = sum r_i`` with::

    A = concat_i(A_i)                 # (R, in)
    B = concat_i(w_i * s_i * B_i)     # (out, R)       lora_alpha = r = R  ->  scaling 1

so that ``B @ A = sum_i w_i * s_i * B_i @ A_i``: the weighted sum of the adapters' deltas,
with no approximation (peft's ``add_weighted_adapter(combination_type="cat")``). Modules
that only some adapters target get the rank of those; peft's ``rank_pattern`` /
``alpha_pattern`` record ranks that differ from the default. Merging with TIES/DARE/... needs
the base: ``llm merge --base_model_path BASE --lora_model_path A B --merge_method ties``
merges the full deltas ``B_i @ A_i`` (mergekit's way) into a full checkpoint.
"""
from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np

from .errors import MergeError
from .io import to_storage, write_streaming
from .sources import ADAPTER_CONFIG, LoraAdapter


def merge_adapters(adapter_paths: list[str], output_path: str, *,
                   weights: list[float] | None = None, normalize: bool = True,
                   dtype: str | None = None, log=print) -> str:
    """Write the weighted concatenation of ``adapter_paths`` to ``output_path``; return it."""
    if len(adapter_paths) < 2:
        raise MergeError("merging adapters needs at least two --lora_model_path values")
    adapters = [LoraAdapter(p) for p in adapter_paths]
    weights = [1.0] * len(adapters) if weights is None else list(weights)
    if len(weights) != len(adapters):
        raise MergeError(f"--weight_list has {len(weights)} values for {len(adapters)} adapters")
    if normalize:
        total = sum(weights)
        if abs(total) < 1e-8:
            raise MergeError("weights sum to zero; cannot normalize")
        weights = [w / total for w in weights]
    bases = {a.base_model_path() for a in adapters} - {None}
    if len(bases) > 1:
        raise MergeError(f"adapters were trained on different bases: {sorted(bases)}")
    if len({bool(a.config.get("fan_in_fan_out")) for a in adapters}) > 1:
        raise MergeError("adapters disagree on fan_in_fan_out")

    modules: dict[str, list[int]] = {}
    for i, a in enumerate(adapters):
        for key in a.pairs:
            modules.setdefault(key, []).append(i)
    for key, users in modules.items():
        shapes = {(adapters[i].reader.shape(adapters[i].pairs[key][1])[0],
                   adapters[i].reader.shape(adapters[i].pairs[key][0])[1]) for i in users}
        if len(shapes) > 1:
            raise MergeError(f"adapters disagree on the shape of {key}: {sorted(shapes)}")
    repl = {k for a in adapters for k in a.replacements}
    for k in repl:
        if not all(k in a.replacements for a in adapters):
            raise MergeError(f"only some adapters save the full tensor {k} (modules_to_save)")

    ranks = {key: sum(adapters[i].rank(key) for i in users) for key, users in modules.items()}
    default_r = Counter(ranks.values()).most_common(1)[0][0]
    prefix = LoraAdapter._PREFIX
    out_dtype = dtype or adapters[0].reader.dtype(next(iter(adapters[0].pairs.values()))[0])
    specs = []
    for key, users in modules.items():
        module = adapters[users[0]].pairs[key][2]
        out_f, in_f = (adapters[users[0]].reader.shape(adapters[users[0]].pairs[key][1])[0],
                       adapters[users[0]].reader.shape(adapters[users[0]].pairs[key][0])[1])
        specs.append((f"{prefix}{module}.lora_A.weight", (ranks[key], in_f), out_dtype))
        specs.append((f"{prefix}{module}.lora_B.weight", (out_f, ranks[key]), out_dtype))
    for k in sorted(repl):
        specs.append((adapters[0].replacements[k], tuple(adapters[0].reader.shape(
            adapters[0].replacements[k])), out_dtype))
    loaders = {}
    for key, users in modules.items():
        module = adapters[users[0]].pairs[key][2]
        loaders[f"{prefix}{module}.lora_A.weight"] = (lambda k=key, u=users: to_storage(
            np.concatenate([adapters[i].reader.get(adapters[i].pairs[k][0]) for i in u],
                           axis=0), out_dtype))  # (R, in)
        loaders[f"{prefix}{module}.lora_B.weight"] = (lambda k=key, u=users: to_storage(
            np.concatenate([np.float32(weights[i] * adapters[i].scaling(k))
                            * adapters[i].reader.get(adapters[i].pairs[k][1]) for i in u],
                           axis=1), out_dtype))  # (out, R)
    wsum = sum(weights) if abs(sum(weights)) > 1e-8 else 1.0
    for k in sorted(repl):  # modules_to_save: the weighted average of the full tensors
        loaders[adapters[0].replacements[k]] = (lambda k=k: to_storage(sum(
            np.float32(w / wsum) * a.reader.get(a.replacements[k])
            for w, a in zip(weights, adapters)), out_dtype))
    write_streaming(output_path, specs, lambda name: loaders[name](), max_shard_size=1 << 62,
                    prefix="adapter_model")

    config = dict(adapters[0].config)
    targets = set()
    for a in adapters:
        t = a.config.get("target_modules") or []
        targets.update([t] if isinstance(t, str) else t)
    config.update({
        "r": default_r, "lora_alpha": default_r, "use_rslora": False,
        "target_modules": sorted(targets),
        "rank_pattern": {adapters[modules[k][0]].pairs[k][2]: r for k, r in ranks.items()
                         if r != default_r},
        "alpha_pattern": {adapters[modules[k][0]].pairs[k][2]: r for k, r in ranks.items()
                          if r != default_r},
    })
    with open(os.path.join(output_path, ADAPTER_CONFIG), "w") as f:
        json.dump(config, f, indent=2)
    log(f"merged {len(adapters)} LoRA adapters ({len(modules)} modules, weights "
        f"{[round(w, 4) for w in weights]}) into {output_path} by concatenation (exact)")
    return output_path
