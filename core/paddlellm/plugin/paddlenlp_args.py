"""PaddleNLP argument files and flags, read by ``llm run`` and ``llm quantize``.

PaddleNLP's ``llm/`` scripts (``run_pretrain.py``, ``run_finetune.py``, ``run_dpo.py``,
``run_kto.py``, ``run_quantization.py``) take a JSON file of ``TrainingArguments`` +
``ModelArgument`` + ``DataArgument`` keys, e.g. ``config/qwen/lora_argument.json``. Users keep
those files, so ``llm run FILE.json`` reads them as written:

* keys with a different name here are renamed (:data:`RENAMES`: ``dataset_name_or_path`` →
  ``data``, ``max_seq_length`` → ``max_length``, ...);
* PEFT switches (``"lora": true``, ``"prefix_tuning": true``, ...) select ``--peft``;
* the job (pretrain, SFT, DPO, KTO, quantization) comes from the file's keys and, as in
  PaddleNLP where each job has its own script, from the file name (``dpo_argument.json``);
* keys that change nothing here (``do_train``, ``disable_tqdm``, ``unified_checkpoint``, a
  parallel degree of 1, ...) are dropped with one line saying so (:data:`NO_EFFECT`);
* keys whose meaning cannot be honoured (a pipeline-parallel degree > 1 on one process, ...)
  are named together in one :class:`ConfigError`.

Every mapping is listed in ``docs/paddlenlp.md``; :func:`mapping_table` renders it.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

#: PaddleNLP key -> our key (same meaning)
RENAMES: dict[str, str] = {
    "dataset_name_or_path": "data",
    "input_dir": "data",
    "train_dataset_path": "data",
    "dev_dataset_path": "eval_data",
    "max_seq_length": "max_length",
    "max_seq_len": "max_length",
    "gradient_checkpointing": "recompute",
    "report_to": "loggers",
}

#: boolean PEFT switches -> the ``--peft`` method they select
PEFT_SWITCHES: dict[str, str] = {
    "lora": "lora",
    "prefix_tuning": "prefix",
    "lokr": "lokr",
    "vera": "vera",
    "use_mora": "mora",
    "reft": "reft",
}

#: keys PaddleNLP reads for a method other than LoRA -> ours, by the selected ``--peft``
#: (MoRA is PaddleNLP's LoRA with ``use_mora``; ReFT's ``ReftArgument`` has bare names)
PEFT_RENAMES: dict[str, dict[str, str]] = {
    "mora": {"lora_rank": "mora_rank", "lora_path": "mora_path",
             "target_modules": "target_modules"},
    "reft": {"layers": "reft_layers", "position": "reft_positions", "rank": "reft_rank",
             "dropout": "reft_dropout"},
}
#: PaddleNLP ReFT keys with the one value implemented here
REFT_FIXED = {"intervention_type": "LoreftIntervention", "act_fn": "linear"}

#: options of the LoRA method that PaddleNLP files set even when LoRA is off
LORA_OPTIONS = ("pissa", "rslora", "use_dora", "lora_use_mixer", "lora_plus_scale", "lora_rank",
                "lora_alpha", "lora_path", "target_modules")
PREFIX_OPTIONS = ("num_prefix_tokens", "prefix_projection", "prefix_path")

#: keys that change nothing in this suite, with the reason shown to the user
NO_EFFECT: dict[str, str] = {
    "do_train": "llm run always trains",
    "do_eval": "held-out evaluation runs before and after training",
    "do_predict": "use `llm predict` on the output",
    "disable_tqdm": "progress is one line per logging step",
    "fp16_opt_level": "mixed precision is set by --bf16/--fp16",
    "eval_accumulation_steps": "evaluation batches are summed exactly",
    "evaluation_strategy": "evaluation runs every --eval_steps and at the end",
    "eval_strategy": "evaluation runs every --eval_steps and at the end",
    "save_strategy": "checkpoints are saved every --save_steps and at the end",
    "load_best_model_at_end": "the output is the final model; checkpoints stay in output_dir",
    "metric_for_best_model": "see load_best_model_at_end",
    "greater_is_better": "see load_best_model_at_end",
    "eval_with_do_generation": "held-out metrics are computed by generation where the stage has them",
    "unified_checkpoint": "checkpoints are always one Hugging Face safetensors layout",
    "unified_checkpoint_config": "checkpoints are always one Hugging Face safetensors layout",
    "dataloader_num_workers": "data is tokenized in the main process",
    "distributed_dataloader": "each process reads its own shard",
    "recompute_granularity": "--recompute recomputes whole decoder layers",
    "recompute_use_reentrant": "--recompute recomputes whole decoder layers",
    "benchmark": "see benchmarks/ for speed measurements",
    "autotuner_benchmark": "see benchmarks/ for speed measurements",
    "flash_mask": "attention masks are chosen by the attention kernel",
    "lazy": "datasets are read eagerly (they are bounded by the data file)",
    "pipeline_parallel_config": "no pipeline parallelism on one process",
    "tensor_parallel_config": "tensor parallelism has no further options",
    "sharding_parallel_config": "sharding has no further options",
    "share_folder": "cached indexes live beside the data",
    "data_cache": "cached indexes live beside the data (index-cache/)",
    "skip_memory_metrics": "no memory metrics are collected",
    "overwrite_output_dir": "output_dir is reused; pass --resume to continue a run",
    "use_fused_rms_norm": "no fused RMSNorm kernel is registered for this backend; the "
                          "reference RMSNorm is used",
    "use_fused_rope": "rotary embeddings use the reference kernel",
    "fuse_attention_qkv": "q/k/v projections keep the checkpoint's layout",
    "fuse_attention_ffn": "MLP projections keep the checkpoint's layout",
    "use_flash_attention": "the fastest registered attention kernel that supports the call is "
                           "chosen (--attention_kernel auto)",
    "offload_optim": "on CPU the optimizer state is already in host memory",
    "intokens": "use --zero_padding to pack examples",
    "src_length": "prompts are truncated together with their answers to --max_length",
    "max_prompt_len": "prompts are truncated together with their answers to --max_length",
    "min_learning_rate": "the schedule decays to 0 (--lr_scheduler_type)",
}

#: parallel degrees: value 1 (or -1/0) is a no-op; anything else maps to a strategy or errors
PARALLEL_KEYS = ("tensor_parallel_degree", "pipeline_parallel_degree", "sharding_parallel_degree",
                 "virtual_pp_degree", "sep_parallel_degree", "context_parallel_degree",
                 "sequence_parallel", "sharding")

#: quantization switches of run_quantization.py -> our quant_type
QUANT_SWITCHES: dict[str, str] = {"do_gptq": "gptq", "do_awq": "awq", "do_ptq": "a8w8",
                                  "do_qat": "qat"}
#: PaddleNLP quant_type / weight_quantize_algo names -> ours
QUANT_TYPES: dict[str, str] = {"a8w8": "a8w8", "a8w8c8": "a8w8c8", "a8w8_fp8": "fp8",
                               "weight_only_int8": "weight_only_int8",
                               "weight_only_int4": "weight_only_int4", "wint8": "weight_only_int8",
                               "wint4": "weight_only_int4", "fp8": "fp8"}
QUANT_NO_EFFECT: dict[str, str] = {
    "smooth": "a8w8 always smooths activations (SmoothQuant)",
    "smooth_step": "smoothing statistics use every calibration block",
    "smooth_all_linears": "every linear layer is smoothed",
    "smooth_piecewise_search": "PieceWiseSearch is not implemented: plain SmoothQuant scales "
                               "(alpha=0.5) are used",
    "smooth_k_piece": "see smooth_piecewise_search",
    "smooth_search_piece": "see smooth_piecewise_search",
    "shift": "activation shifting is not applied",
    "shift_step": "activation shifting is not applied",
    "shift_all_linears": "activation shifting is not applied",
    "per_device_train_batch_size": "calibration uses --batch_size",
    "per_device_eval_batch_size": "evaluation uses --batch_size",
    "src_length": "calibration blocks are --seqlen tokens",
    "max_length": "calibration blocks are --seqlen tokens",
    "load_quant_model": "`llm predict` loads quantized checkpoints directly",
    "use_fp8": "set by quant_type",
}
_JOB_FROM_NAME = (  # (pattern on the file name, job)
    (re.compile(r"(^|[_-])kto([_-]|$)"), "kto"),
    (re.compile(r"(^|[_-])(dpo|simpo|orpo|ipo)([_-]|$)"), "dpo"),
    (re.compile(r"(^|[_-])pretrain([_-]|$)"), "pretrain"),
    (re.compile(r"(^|[_-])(ptq|gptq|awq|qat|fp8_ptq|ptq_c8)([_-]|$)"), "quantize"),
)


def _is_off(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("", "0", "false", "no", "none", "null", "off")
    return value in (None, False, 0, 0.0, [], {})


def _degree(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1 if _is_off(value) else 2


def is_paddlenlp_config(raw: Mapping[str, Any]) -> bool:
    """Whether ``raw`` uses any key that only PaddleNLP's argument files use."""
    known = (set(RENAMES) | set(PEFT_SWITCHES) | set(NO_EFFECT) | set(PARALLEL_KEYS)
             | set(QUANT_SWITCHES) | {"continue_training", "weight_quantize_algo"})
    return any(key in known for key in raw)


def job_of(raw: Mapping[str, Any], file: str | os.PathLike | None = None) -> str | None:
    """'pretrain' | 'sft' | 'dpo' | 'kto' | 'quantize' for a PaddleNLP file, None if unsure."""
    if any(not _is_off(raw.get(k)) for k in QUANT_SWITCHES):
        return "quantize"
    if file is not None:
        name = Path(file).stem.lower()
        for pattern, job in _JOB_FROM_NAME:
            if pattern.search(name):
                return job
    if "input_dir" in raw or "continue_training" in raw:
        return "pretrain"
    if "train_dataset_path" in raw:  # run_dpo.py / run_kto.py's data keys
        return "dpo"
    if "dataset_name_or_path" in raw:
        return "sft"
    return None


def translate(raw: Mapping[str, Any], file: str | os.PathLike | None = None,
              world_size: int | None = None) -> tuple[dict[str, Any], list[str]]:
    """PaddleNLP keys in ``raw`` -> our keys; returns ``(config, notes)``.

    Our own keys pass through unchanged, so a file may mix both. ``notes`` are one-line
    messages about keys that change nothing here. Keys that cannot be honoured raise one
    :class:`ConfigError` naming all of them (and ``file``).
    """
    where = f"{file}: " if file else ""
    world = world_size if world_size is not None else int(os.environ.get("PADDLE_TRAINERS_NUM", "1") or 1)
    out: dict[str, Any] = {}
    notes: list[str] = []
    problems: list[str] = []
    job = job_of(raw, file) if is_paddlenlp_config(raw) else None
    if job == "quantize":
        raise ConfigError(f"{where}this is a quantization argument file (run_quantization.py); "
                          f"run it with `llm quantize {file or 'FILE'}`")

    peft = [PEFT_SWITCHES[k] for k in PEFT_SWITCHES if k in raw and not _is_off(raw[k])]
    if "use_mora" in raw and not _is_off(raw["use_mora"]):
        peft = [p for p in peft if p != "lora"]  # PaddleNLP: lora + use_mora selects MoRA
    if len(peft) > 1:
        problems.append(f"{' and '.join(peft)} are both switched on; choose one PEFT method")
    elif peft and raw.get("peft") not in (None, peft[0]):
        problems.append(f"'peft': {raw['peft']!r} and the PaddleNLP switch for {peft[0]} disagree")
    if peft:
        out["peft"] = peft[0]
    selected_peft = out.get("peft", raw.get("peft"))

    for key, value in raw.items():
        if key in PEFT_SWITCHES:
            continue
        if key in RENAMES:
            ours = RENAMES[key]
            if ours in raw and raw[ours] != value:
                problems.append(f"'{key}' ({value!r}) and '{ours}' ({raw[ours]!r}) disagree")
            out[ours] = value
        elif key in NO_EFFECT:
            if not _is_off(value) or key in ("src_length", "max_prompt_len"):
                notes.append(f"{key}: {NO_EFFECT[key]}")
        elif key in PEFT_RENAMES.get(selected_peft, {}):
            out[PEFT_RENAMES[selected_peft][key]] = value
        elif key in REFT_FIXED and selected_peft == "reft":
            if value not in (None, REFT_FIXED[key]):
                problems.append(f"'{key}': {value!r} is not implemented; ReFT here is "
                                f"{key} = {REFT_FIXED[key]!r}")
        elif key == "add_bias" and selected_peft == "reft":
            notes.append("add_bias: no effect for LoreftIntervention (its W h + b always has b)")
        elif key in LORA_OPTIONS and selected_peft != "lora":
            if not _is_off(value) and key in ("pissa", "rslora", "use_dora", "lora_use_mixer"):
                problems.append(f"'{key}': true needs LoRA ('lora': true or --peft lora)")
            elif selected_peft is not None or not _is_off(value):
                notes.append(f"{key}: ignored without LoRA")
        elif key in PREFIX_OPTIONS and selected_peft != "prefix":
            notes.append(f"{key}: ignored without prefix tuning")
        elif key == "tensor_parallel_degree" and raw.get("strategy") == "tensor_parallel":
            out[key] = value  # our own strategy option, with --strategy tensor_parallel
        elif key in PARALLEL_KEYS:
            _parallel(key, value, world, out, notes, problems)
        elif key == "continue_training":
            out["continue_training"] = not _is_off(value)
        elif key == "weight_quantize_algo":  # QLoRA: a quantized base under the adapters
            if not _is_off(value):
                algo = str(value)
                if algo not in QUANT_TYPES:
                    problems.append(f"'weight_quantize_algo': {algo!r} is not supported here "
                                    f"(supported: weight_only_int8, weight_only_int4)")
                else:
                    out["quant_type"] = QUANT_TYPES[algo]
        else:
            out[key] = value

    if job in ("dpo", "kto") and "align" not in out:
        out["align"] = job
    elif job == "pretrain" and "stage" not in out:
        out["stage"] = "pretrain"
    if problems:
        raise ConfigError(f"{where}PaddleNLP keys that cannot be honoured here: "
                          + "; ".join(problems) + " (see docs/paddlenlp.md)")
    return out, notes


def _parallel(key: str, value: Any, world: int, out: dict[str, Any], notes: list[str],
              problems: list[str]) -> None:
    if key == "sharding":
        stages = [s for s in str(value).replace(",", " ").split() if s.startswith("stage")]
        if _is_off(value) or not stages:
            return
        if world <= 1:
            notes.append(f"sharding: {value} has no effect in a single process (launch several "
                         "with `llm launch`)")
            return
        out.setdefault("strategy", "sharding")
        out["sharding_stage"] = int(stages[-1][len("stage"):] or 1)
        return
    degree = _degree(value)
    if key == "sequence_parallel":
        if degree not in (0, 1) and not _is_off(value):
            problems.append("'sequence_parallel': sequence parallelism is not supported")
        return
    if degree in (-1, 0, 1):
        return  # the default: no parallelism of this kind
    if key == "tensor_parallel_degree":
        out["strategy"] = "tensor_parallel"
        out["tensor_parallel_degree"] = degree
        if world <= 1:
            problems.append(f"'tensor_parallel_degree': {degree} needs {degree} processes: "
                            f"`llm launch --nproc_per_node {degree} -- run ...`, or set it to 1")
    elif key == "pipeline_parallel_degree":
        problems.append(f"'pipeline_parallel_degree': {degree}: pipeline parallelism does not run "
                        "on this backend; set it to 1 (use tensor_parallel_degree or sharding)")
    elif key == "sharding_parallel_degree":
        if world <= 1:
            notes.append(f"sharding_parallel_degree: {degree} has no effect in a single process")
    else:
        problems.append(f"'{key}': {degree} is not supported; set it to 1")


def translate_quantize(raw: Mapping[str, Any], file: str | os.PathLike | None = None
                       ) -> tuple[dict[str, Any], list[str]]:
    """A ``run_quantization.py`` argument file -> ``llm quantize`` keys; ``(keys, notes)``."""
    where = f"{file}: " if file else ""
    out: dict[str, Any] = {}
    notes: list[str] = []
    types = [QUANT_SWITCHES[k] for k in QUANT_SWITCHES if not _is_off(raw.get(k))]
    if "qat" in types:
        raise ConfigError(f"{where}'do_qat': quantization-aware training is not supported; use "
                          "do_ptq (a8w8), do_gptq or do_awq")
    explicit = raw.get("quant_type") or raw.get("weight_quantize_algo")
    if explicit:
        if str(explicit) not in QUANT_TYPES and str(explicit) not in ("gptq", "awq"):
            raise ConfigError(f"{where}quant_type {explicit!r} is not supported (supported: "
                              f"{', '.join(sorted(set(QUANT_TYPES) | {'gptq', 'awq'}))})")
        qt = QUANT_TYPES.get(str(explicit), str(explicit))
        if "gptq" in types or "awq" in types:  # do_gptq + weight_quantize_algo: the algorithm wins
            qt = types[0]
        out["quant_type"] = qt
    elif types:
        out["quant_type"] = types[0]
    for key, value in raw.items():
        if key in QUANT_SWITCHES or key in ("quant_type", "weight_quantize_algo"):
            continue
        if key == "dataset_name_or_path":
            data = Path(str(value))
            if data.is_dir():
                calib = _first(data, ("quant.json", "quant.jsonl", "train.json", "train.jsonl"))
                dev = _first(data, ("dev.json", "dev.jsonl"))
                if calib is None:
                    raise ConfigError(f"{where}dataset_name_or_path {data}: no quant.json or "
                                      "train.json in the folder")
                out["calibration_data"] = str(calib)
                if dev is not None:
                    out["eval_data"] = str(dev)
            else:
                out["calibration_data"] = str(data)
        elif key in ("ptq_step", "gptq_step", "awq_step"):
            out["nsamples"] = int(value) * int(raw.get("per_device_train_batch_size", 1) or 1)
        elif key == "max_length" and "seqlen" not in raw:
            notes.append(f"max_length: {QUANT_NO_EFFECT['max_length']}")
        elif key in QUANT_NO_EFFECT:
            notes.append(f"{key}: {QUANT_NO_EFFECT[key]}")
        elif key in NO_EFFECT:
            notes.append(f"{key}: {NO_EFFECT[key]}")
        elif key == "bf16" or key == "fp16":
            if not _is_off(value):
                notes.append(f"{key}: the checkpoint is quantized from float32 weights")
        else:
            out[key] = value
    return out, notes


def _first(folder: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def resolve_data_folder(data: str | None, eval_data: str | None, stage: str
                        ) -> tuple[str | None, str | None]:
    """PaddleNLP's dataset folder: ``DIR/train.json`` (+ ``DIR/dev.json`` as eval data).

    A folder of ``.bin``/``.idx`` files (pretraining) is left for the indexed reader.
    """
    if not data or not Path(data).is_dir():
        return data, eval_data
    folder = Path(data)
    if any(folder.glob("*.idx")):
        return data, eval_data
    if (any((folder / n).is_file() for n in ("dataset_info.json", "state.json",
                                              "dataset_dict.json"))
            or any(p.suffix in (".parquet", ".arrow") for p in folder.rglob("*"))) \
            and _first(folder, ("train.json", "train.jsonl")) is None:
        return data, eval_data  # a Hugging Face datasets folder (paddlellm.data.hf_datasets)
    train = _first(folder, ("train.json", "train.jsonl"))
    if train is None:
        if stage == "pretrain":
            train = _first(folder, ("train.txt",))
        if train is None:
            raise ConfigError(f"data folder {folder}: expected train.json (and optionally "
                              "dev.json), as PaddleNLP's dataset_name_or_path folders hold, "
                              "parquet/arrow files (a Hugging Face datasets folder), or "
                              "a .bin/.idx pair for pretraining")
    if eval_data is None:
        dev = _first(folder, ("dev.json", "dev.jsonl", "eval.json", "eval.jsonl"))
        eval_data = str(dev) if dev else None
    return str(train), eval_data


def mapping_table() -> str:
    """The key mapping as Markdown rows (docs/paddlenlp.md is checked against it)."""
    rows = ["| PaddleNLP key | here |", "|---|---|"]
    rows += [f"| `{k}` | `{v}` |" for k, v in RENAMES.items()]
    rows += [f"| `{k}: true` | `--peft {v}` |" for k, v in PEFT_SWITCHES.items()]
    rows += [f"| `{k}` (with {method}) | `{v}` |" for method, keys in PEFT_RENAMES.items()
             for k, v in keys.items()]
    rows += [f"| `{k}` (with reft) | only `{v}` |" for k, v in REFT_FIXED.items()]
    rows += ["| `add_bias` (with reft) | no effect (LoReFT's `W h + b` always has `b`) |"]
    rows += ["| `report_to: none` / `all` | `--loggers none` (metrics.jsonl only) / every "
             "installed logger |",
             "| `logging_dir` | `logging_dir` (TensorBoard/VisualDL event files; default "
             "output_dir/runs) |"]
    rows += ["| `continue_training` | `continue_training` (start from the checkpoint's weights) |",
             "| `weight_quantize_algo` | `--quant_type` (QLoRA base) |",
             "| `tensor_parallel_degree: N>1` | `--strategy tensor_parallel "
             "--tensor_parallel_degree N` |",
             "| `sharding: stageK` (several processes) | `--strategy sharding --sharding_stage K` |",
             "| `pipeline_parallel_degree: N>1` | error: no pipeline parallelism on this backend |"]
    rows += [f"| `{k}` | no effect: {v} |" for k, v in NO_EFFECT.items()]
    return "\n".join(rows)


#: PaddleNLP predictor's --avx_type (xFasterTransformer weight types) -> (dtype, quant_type)
AVX_TYPES = {"fp16": ("float16", None), "bf16": ("bfloat16", None),
             "bf16_fp16": ("bfloat16", None), "int8": ("float32", "weight_only_int8"),
             "w8a8": ("float32", "weight_only_int8"), "fp32": ("float32", None)}


def predictor_flags(*, inference_model: bool = False, mode: str = "dynamic",
                    block_attn: bool = False, append_attn: bool = False,
                    cachekv_int8_type: str | None = None, avx_model: bool = False,
                    avx_type: str | None = None, dtype: str = "float32",
                    quant_type: str | None = None) -> tuple[str, str | None, list[str]]:
    """PaddleNLP ``predictor.py`` flags -> ``(dtype, quant_type, notes)`` for ``llm predict``.

    The engine is always the paged-cache inference path, so ``--inference_model``,
    ``--block_attn`` and ``--append_attn`` change nothing (noted); ``--mode static`` and
    ``--cachekv_int8_type dynamic`` are errors saying what to use instead.
    """
    notes: list[str] = []
    if inference_model:
        notes.append("--inference_model: the engine is always the inference path")
    if block_attn or append_attn:
        which = "--block_attn" if block_attn else "--append_attn"
        notes.append(f"{which}: the engine always uses the paged (block) KV cache")
    if mode not in ("dynamic", "static"):
        raise ConfigError(f"--mode {mode!r}: valid values are dynamic and static")
    if mode == "static":
        raise ConfigError("--mode static: there is no exported static-graph model here; the "
                          "engine runs the dynamic graph (--mode dynamic, the default)")
    if cachekv_int8_type not in (None, "", "none", "None"):
        if cachekv_int8_type == "dynamic":
            raise ConfigError("--cachekv_int8_type dynamic: PaddleNLP no longer maintains it and "
                              "the engine does not offer it; quantize with `llm quantize "
                              "--quant_type a8w8c8` and use --cachekv_int8_type static")
        if cachekv_int8_type != "static":
            raise ConfigError(f"--cachekv_int8_type {cachekv_int8_type!r}: valid values are "
                              "static (and PaddleNLP's deprecated dynamic)")
    if avx_type is not None and not avx_model:
        notes.append("--avx_type without --avx_model: ignored")
    elif avx_model:
        if avx_type is not None:
            if avx_type not in AVX_TYPES:
                raise ConfigError(f"--avx_type {avx_type!r}: valid values are "
                                  f"{', '.join(AVX_TYPES)}")
            new_dtype, new_quant = AVX_TYPES[avx_type]
            if dtype not in ("float32", new_dtype) or quant_type not in (None, new_quant) and new_quant:
                raise ConfigError(f"--avx_type {avx_type} and --dtype {dtype} / --quant_type "
                                  f"{quant_type} disagree")
            dtype, quant_type = new_dtype, quant_type or new_quant
            notes.append(f"--avx_model --avx_type {avx_type}: CPU inference on the engine with "
                         f"{dtype} weights" + (f" ({quant_type})" if quant_type else ""))
        else:
            notes.append("--avx_model: CPU inference always runs on the engine")
    return dtype, quant_type, notes
