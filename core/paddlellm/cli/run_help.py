"""What ``llm run --help`` lists: every core key and the keys of every installed plugin.

Core keys come from :class:`paddlellm.plugin.config.RunConfig` (grouped as composition, data,
trainer); each plugin's keys from its registered options class (``register(...,
options=...)`` or the target's ``config_class``), one panel per plugin, plugins sharing one
options class sharing a panel. A plugin whose options cannot be loaded is left out (``llm
plugins`` reports why) rather than failing the help.
"""
from __future__ import annotations

from typing import Any

from .options import HelpOption, fields_help_options

#: one-line help of the core keys whose field has no description (TrainingArguments names)
CORE_HELP: dict[str, str] = {
    "output_dir": "where checkpoints, logs and the final model are written",
    "eval_data": "held-out data for evaluation (default: a split of --data or the demo's)",
    "max_steps": "optimizer steps to run (-1: num_train_epochs decides)",
    "num_train_epochs": "passes over the training data (when max_steps is -1)",
    "per_device_train_batch_size": "sequences per device per micro-batch",
    "per_device_eval_batch_size": "sequences per device per evaluation batch",
    "gradient_accumulation_steps": "micro-batches accumulated per optimizer step",
    "learning_rate": "peak learning rate (AdamW)",
    "weight_decay": "AdamW weight decay",
    "adam_beta1": "AdamW beta1",
    "adam_beta2": "AdamW beta2",
    "adam_epsilon": "AdamW epsilon",
    "max_grad_norm": "clip the global gradient norm to this (0: no clipping)",
    "warmup_steps": "linear warm-up steps (wins over warmup_ratio)",
    "warmup_ratio": "warm-up as a fraction of the total steps",
    "lr_scheduler_type": "learning-rate schedule after warm-up",
    "save_steps": "save a checkpoint every N steps",
    "save_total_limit": "keep at most N checkpoints (oldest deleted)",
    "logging_steps": "log loss and throughput every N steps",
    "eval_steps": "evaluate every N steps (default: only at the end)",
    "bf16": "train in bfloat16 (where the backend supports it)",
    "fp16": "train in float16 with loss scaling (GPU)",
    "seed": "random seed (data order, initialisation, dropout)",
}

COMPOSITION = ("model", "model_name_or_path", "stage", "peft", "align", "strategy", "device",
               "attention_kernel", "quant_type")
DATA = ("data", "eval_data", "data_columns", "max_length", "zero_padding", "split",
        "tokenizer_name_or_path")


def run_help_options(manager: Any | None = None) -> list[HelpOption]:
    """Rows of ``llm run --help``: core panels first, then one panel per plugin."""
    from ..plugin.config import PLUGIN_FIELDS, RunConfig

    if manager is None:
        from ..plugin.manager import get_plugin_manager

        manager = get_plugin_manager()
    registry = manager.registry
    rows = []
    for row in fields_help_options(RunConfig, "core"):
        row.help = row.help or CORE_HELP.get(row.name, "")
        if row.name in PLUGIN_FIELDS:
            names = registry.names(PLUGIN_FIELDS[row.name])
            if names:
                row.help = f"{row.help}; installed: {', '.join(names)}".lstrip("; ")
        row.panel = ("core: what to run" if row.name in COMPOSITION
                     else "core: data" if row.name in DATA else "core: trainer")
        rows.append(row)
    return rows + plugin_help_options(registry)


def plugin_help_options(registry: Any) -> list[HelpOption]:
    """One panel per plugin (or group of plugins sharing an options class) with options."""
    from ..plugin.config import CORE_KEYS, PLUGIN_FIELDS

    rows: list[HelpOption] = []
    for field, kind in PLUGIN_FIELDS.items():
        groups: dict[Any, list] = {}
        for entry in registry.entries(kind):
            try:
                cls = entry.options_class()
            except Exception:  # a broken plugin does not break the help (`llm plugins` says why)
                continue
            if cls is not None and getattr(cls, "model_fields", None):
                groups.setdefault(cls, []).append(entry)
        for cls, entries in groups.items():
            names = ", ".join(e.name for e in entries)
            dists = ", ".join(sorted({e.distribution for e in entries}))
            panel = f"--{field} {names} ({dists})"
            rows += fields_help_options(cls, panel, skip=CORE_KEYS)
    return rows
