"""What to merge: a :class:`MergeSpec`, read from mergekit's YAML or PaddleNLP-style flags.

mergekit YAML (``llm merge config.yaml --output_path OUT``)::

    merge_method: ties
    base_model: ./base
    models:
      - model: ./math
        parameters: {weight: 0.6, density: [0.3, 0.7]}   # gradient over layers
      - model: ./code
        parameters: {weight: [{filter: self_attn, value: 0.2}, {value: 0.5}]}
    parameters: {normalize: true}
    dtype: bfloat16

PaddleNLP flags (``llm merge --merge_method linear --model_path_list A B --weight_list 0.5 0.5
--output_path OUT``) map onto the same spec: ``weight_list`` -> per-model ``weight``,
``reserve_p`` -> ``density``, ``slerp_alpha`` -> ``t``, ``ties_elect_type`` -> ``consensus``,
``epsilon`` (PaddleNLP's full width: keep probabilities span ``reserve_p +- epsilon/2``) ->
mergekit's half-width ``epsilon / 2``.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from .errors import MergeError
from .io import canonical_dtype


@dataclass
class ModelInput:
    model: str  # a checkpoint directory or "BASE+ADAPTER"
    parameters: dict[str, Any] | None = None


@dataclass
class MergeSpec:
    merge_method: str
    models: list[ModelInput]
    base_model: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None  # output dtype (mergekit: working dtype, also the output's)
    out_dtype: str | None = None
    #: parameter names set by PaddleNLP-style flags: dropped when the method does not take
    #: them (``--weight_list`` with slerp), where a YAML typo is an error
    flag_params: list[str] = field(default_factory=list)

    def output_dtype(self) -> str | None:
        name = self.out_dtype or self.dtype
        return canonical_dtype(name) if name else None

    def to_dict(self) -> dict:
        return asdict(self)


_YAML_KEYS = {"merge_method", "models", "base_model", "parameters", "dtype", "out_dtype",
              "tokenizer_source", "seed"}


def spec_from_dict(data: dict, *, where: str = "config") -> MergeSpec:
    """Validate a mergekit-style mapping into a :class:`MergeSpec`."""
    if not isinstance(data, dict):
        raise MergeError(f"{where}: expected a mapping at the top level")
    for key in data:
        if key in ("slices", "modules"):
            raise MergeError(f"{where}: '{key}' (layer slicing / passthrough) is not supported; "
                             "use 'models'")
        if key not in _YAML_KEYS:
            raise MergeError(f"{where}: unknown key '{key}'; valid: {', '.join(sorted(_YAML_KEYS))}")
    if "merge_method" not in data:
        raise MergeError(f"{where}: 'merge_method' is required")
    models = data.get("models") or []
    if not isinstance(models, list) or not models:
        raise MergeError(f"{where}: 'models' must be a non-empty list")
    inputs = []
    for i, m in enumerate(models):
        if isinstance(m, str):
            m = {"model": m}
        if not isinstance(m, dict) or "model" not in m:
            raise MergeError(f"{where}: models[{i}] needs a 'model' key")
        extra = set(m) - {"model", "parameters"}
        if extra:
            raise MergeError(f"{where}: models[{i}] has unknown keys {sorted(extra)}; "
                             "valid: model, parameters")
        inputs.append(ModelInput(str(m["model"]), dict(m.get("parameters") or {}) or None))
    tok = data.get("tokenizer_source")
    if tok not in (None, "base"):
        raise MergeError(f"{where}: tokenizer_source '{tok}' is not supported (tokenizer files "
                         "are copied from the base model, or the first model)")
    params = dict(data.get("parameters") or {})
    if "seed" in data:
        params["seed"] = data["seed"]
    spec = MergeSpec(str(data["merge_method"]), inputs, data.get("base_model"), params,
                     data.get("dtype"), data.get("out_dtype"))
    spec.output_dtype()  # validates the names
    return spec


def spec_from_yaml(path: str) -> MergeSpec:
    import yaml

    if not os.path.exists(path):
        raise MergeError(f"merge config '{path}' does not exist")
    with open(path) as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise MergeError(f"{path}: invalid YAML: {exc}") from None
    return spec_from_dict(data, where=path)


def _bool(value: str) -> bool:
    v = value.lower()
    if v in ("1", "true", "yes", "y"):
        return True
    if v in ("0", "false", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got '{value}'")


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are :class:`MergeError` (``error: ...``, no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        raise MergeError(f"llm merge: {message} (see llm merge --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="llm merge", add_help=False,
        description="Merge models (linear, slerp, task_arithmetic, ties, dare_linear, dare_ties, "
                    "della, della_linear) or LoRA adapters, streaming tensor by tensor. "
                    "Give a mergekit YAML file, or PaddleNLP-style flags.")
    p.add_argument("config", nargs="?", help="mergekit YAML merge config")
    p.add_argument("--output_path", required=True, help="output checkpoint directory")
    p.add_argument("--merge_method", default=None, help="merge method (default linear)")
    p.add_argument("--model_path_list", nargs="+", default=None, help="models to merge")
    p.add_argument("--model_path_str", default=None, help="comma-separated model paths")
    p.add_argument("--base_model_path", default=None, help="base model (task-vector methods)")
    p.add_argument("--lora_model_path", nargs="+", default=None,
                   help="LoRA adapter(s): one with --base_model_path merges it into the base; "
                        "several are merged with each other (see docs)")
    p.add_argument("--sparsify_type", default=None,
                   help="PaddleNLP's sparsification: dare | magprune | trim, combined with "
                        "--merge_method linear/ties (dare+linear = dare_linear, dare+ties = "
                        "dare_ties, magprune+linear = della_linear, magprune+ties = della, "
                        "trim+ties = ties)")
    p.add_argument("--weight_list", nargs="+", type=float, default=None, help="model weights")
    p.add_argument("--normalize", type=_bool, default=None, help="normalize the weights")
    p.add_argument("--reserve_p", type=float, default=None,
                   help="kept fraction for trim/dare/magprune (default 0.7)")
    p.add_argument("--epsilon", type=float, default=None,
                   help="magprune: keep probabilities span reserve_p +- epsilon/2 (default 0.14)")
    p.add_argument("--rescale", type=_bool, default=None, help="rescale after sparsifying")
    p.add_argument("--rescale_norm", default=None, help="inverse (papers) | l1 | l2 | linf")
    p.add_argument("--lambda", dest="lambda_", type=float, default=None,
                   help="scale of the merged task vector")
    p.add_argument("--slerp_alpha", type=float, default=None, help="slerp t (default 0.5)")
    p.add_argument("--slerp_dot_threshold", type=float, default=None)
    p.add_argument("--slerp_normalize_eps", type=float, default=None)
    p.add_argument("--ties_elect_type", default=None, help="sum | count")
    p.add_argument("--seed", type=int, default=None, help="random seed for dare/della")
    p.add_argument("--dtype", default=None, help="output dtype (default: the inputs')")
    p.add_argument("--n_process", type=int, default=1, help="parallel merge processes")
    p.add_argument("--device", default="cpu", help="cpu (merging is NumPy on the CPU)")
    p.add_argument("--tensor_type", default="np", help="np (accepted for PaddleNLP parity)")
    p.add_argument("--merge_prefix", default="model", help="weights file prefix")
    p.add_argument("--max_shard_size", default="5GB", help="output shard size, e.g. 2GB")
    p.add_argument("--copy_file_list", nargs="+", default=None,
                   help="extra files to copy from the base (or first) model")
    p.add_argument("--no-parity", "--no_parity", dest="parity", action="store_false",
                   help="skip the top-1 parity summary after merging")
    p.add_argument("--parity_prompts", nargs="+", default=None,
                   help="prompts for the parity summary")
    return p


SPARSIFYING = {"ties", "dare_linear", "dare_ties", "della", "della_linear"}
#: PaddleNLP's (merge_method, sparsify_type) -> our merge method
SPARSIFY_COMBINED = {("linear", "dare"): "dare_linear", ("ties", "dare"): "dare_ties",
                     ("linear", "magprune"): "della_linear", ("ties", "magprune"): "della",
                     ("ties", "trim"): "ties"}


def combine_sparsify(merge_method: str | None, sparsify_type: str | None) -> str | None:
    """PaddleNLP's ``--merge_method`` + ``--sparsify_type`` pair as one of our methods."""
    if sparsify_type is None or str(sparsify_type).lower() in ("none", ""):
        return merge_method
    key = (merge_method or "linear", str(sparsify_type).lower())
    if key not in SPARSIFY_COMBINED:
        pairs = ", ".join(f"{m}+{t}" for m, t in SPARSIFY_COMBINED)
        raise MergeError(f"--sparsify_type {sparsify_type} with --merge_method {key[0]} is not "
                         f"supported; supported pairs: {pairs}")
    return SPARSIFY_COMBINED[key]


def spec_from_args(ns: argparse.Namespace) -> MergeSpec:
    """PaddleNLP-style flags (and/or a YAML file, whose values the flags override) -> spec."""
    if ns.device not in ("cpu", None):
        raise MergeError(f"--device {ns.device}: merging runs in NumPy on the CPU; use --device cpu")
    if ns.tensor_type != "np":
        raise MergeError(f"--tensor_type {ns.tensor_type}: only 'np' is supported")
    if getattr(ns, "sparsify_type", None):
        ns.merge_method = combine_sparsify(ns.merge_method, ns.sparsify_type)
    if ns.config:
        spec = spec_from_yaml(ns.config)
        if ns.merge_method:
            spec.merge_method = ns.merge_method
        if ns.base_model_path:
            spec.base_model = ns.base_model_path
    else:
        paths = ns.model_path_list or (ns.model_path_str.split(",") if ns.model_path_str else None)
        if ns.lora_model_path:
            spec = _lora_spec(ns, paths)
            _apply_flags(spec, ns)
            return spec
        if not paths:
            raise MergeError("give a YAML merge config or --model_path_list A B ...")
        if len(paths) < 2:
            raise MergeError(f"--model_path_list needs at least two models, got {paths}")
        spec = MergeSpec(ns.merge_method or "linear", [ModelInput(p) for p in paths],
                         ns.base_model_path)
        _apply_weights(spec, ns.weight_list)
    _apply_flags(spec, ns)
    return spec


def _apply_weights(spec: MergeSpec, weights: list[float] | None) -> None:
    n = len(spec.models)
    if weights is None:
        weights = [1.0] * n
        spec.parameters.setdefault("normalize", True)
    if len(weights) != n:
        raise MergeError(f"--weight_list has {len(weights)} values for {n} models")
    for m, w in zip(spec.models, weights):
        m.parameters = {**(m.parameters or {}), "weight": w}
    spec.flag_params = sorted({*spec.flag_params, "weight", "normalize"})


def _apply_flags(spec: MergeSpec, ns: argparse.Namespace) -> None:
    p = spec.parameters
    before = dict(p)
    method = spec.merge_method
    if ns.normalize is not None:
        p["normalize"] = ns.normalize
    if ns.reserve_p is not None or (method in SPARSIFYING and not ns.config):
        reserve = 0.7 if ns.reserve_p is None else ns.reserve_p
        if not 0 <= reserve <= 1:
            raise MergeError(f"--reserve_p must be in [0, 1], got {reserve}")
        p["density"] = reserve
    if method in ("della", "della_linear") and (ns.epsilon is not None or not ns.config):
        p["epsilon"] = (0.14 if ns.epsilon is None else ns.epsilon) / 2
    for flag, key in (("rescale", "rescale"), ("rescale_norm", "rescale_norm"),
                      ("lambda_", "lambda"), ("slerp_dot_threshold", "dot_threshold"),
                      ("slerp_normalize_eps", "eps"),
                      ("ties_elect_type", "consensus"), ("seed", "seed")):
        if getattr(ns, flag) is not None:
            p[key] = getattr(ns, flag)
    if method == "slerp" and (ns.slerp_alpha is not None or "t" not in p):
        p["t"] = 0.5 if ns.slerp_alpha is None else ns.slerp_alpha
    if ns.dtype:
        spec.out_dtype = ns.dtype
        spec.output_dtype()
    changed = {k for k in p if k not in before or before[k] != p[k]}
    spec.flag_params = sorted({*spec.flag_params, *changed})


def _lora_spec(ns: argparse.Namespace, paths: list[str] | None) -> MergeSpec:
    if paths:
        raise MergeError("give either --model_path_list or --lora_model_path, not both")
    if not ns.base_model_path:
        raise MergeError("--lora_model_path needs --base_model_path here")
    base = ns.base_model_path
    spec = MergeSpec(ns.merge_method or "linear",
                     [ModelInput(f"{base}+{a}") for a in ns.lora_model_path],
                     base if (ns.merge_method or "linear") not in ("linear",) else None)
    _apply_weights(spec, ns.weight_list)
    return spec
