"""Run configuration: a JSON/YAML file plus ``--key value`` flags, validated by pydantic.

Flags win over the file. Keys are flat, in the names users know from PaddleNLP's LLM suite
and Hugging Face's ``TrainingArguments``. A selected plugin may add its own keys by giving
its registered object a ``config_class`` (a pydantic model); those keys are valid only when
that plugin is selected. An unknown key is an error naming the closest valid keys; an
unknown plugin name is an error listing the installed names of that kind.
"""
from __future__ import annotations

import difflib
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import ConfigError
from ..kinds import field_kinds, options_key

if typing.TYPE_CHECKING:  # pragma: no cover
    from .registry import Registry


#: what ``--data_columns`` may map a column to, and what each means (applied by
#: :mod:`paddlellm.data.columns`)
TARGETS: dict[str, str] = {
    "prompt": "the user's question (a string, or a list of chat messages)",
    "response": "the answer trained on (SFT)",
    "system": "a system prompt",
    "messages": "a chat conversation (OpenAI messages)",
    "conversations": "a ShareGPT conversation (from/value turns)",
    "instruction": "alpaca instruction", "input": "alpaca input", "output": "alpaca output",
    "chosen": "the preferred response", "rejected": "the rejected response",
    "completion": "a response (KTO: judged by label; else the SFT answer)",
    "label": "KTO: whether the completion is desirable",
    "src": "PaddleNLP src", "tgt": "PaddleNLP tgt",
    "sort": "PaddleNLP preference scores",
}


def parse_columns(value: Any) -> dict[str, str]:
    """``"prompt=question,response=answer"`` (or a list of ``TARGET=COLUMN`` items, or a
    mapping) -> ``{"prompt": "question", "response": "answer"}``; an unknown target or a
    malformed item is a :class:`ConfigError` naming ``--data_columns``."""
    if value is None or value == "":
        return {}
    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    else:
        parts = [value] if isinstance(value, str) else list(value)
        items = []
        for part in parts:
            for item in str(part).split(","):
                if not item.strip():
                    continue
                target, eq, column = item.partition("=")
                if not eq or not target.strip() or not column.strip():
                    raise ConfigError(f"--data_columns: '{item}' is not TARGET=COLUMN (e.g. "
                                      "prompt=question,response=answer)")
                items.append((target.strip(), column.strip()))
    out: dict[str, str] = {}
    for target, column in items:
        if target not in TARGETS:
            raise ConfigError(f"--data_columns: unknown target '{target}'; valid: "
                              f"{', '.join(TARGETS)}")
        out[target] = column
    return out


class RunConfig(BaseModel):
    """Everything ``llm run`` composes and the trainer options."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- composition (plugin names) ---
    model: str = Field("qwen", description="model family or preset name (see `llm models`)")
    model_name_or_path: str | None = Field(None, description="checkpoint directory to start from")
    stage: str = Field("sft", description="training stage (see `llm plugins --kind stage`)")
    peft: str | None = Field(None, description="PEFT method (see `llm plugins`)")
    align: str | None = Field(None, description="alignment loss (see `llm plugins`)")
    reward: str | None = Field(None, description="reward of the RLHF stages ppo/grpo (see "
                               "`llm plugins --kind reward`)")
    strategy: str = Field("single", description="trainer strategy")
    device: str = Field("auto", description="hardware backend name, or auto")
    attention_kernel: str = Field("auto", description="attention kernel name, or auto")
    quant_type: str | None = Field(None, description="QLoRA: quantize the base model "
                                   "(weight_only_int4, weight_only_int8) under the --peft adapters")

    # --- data ---
    data: str | None = Field(None, description="training data: a jsonl file or PaddleNLP folder, "
                             "a parquet/arrow/JSON file or folder, or a Hub dataset id "
                             "(SOURCE:SPLIT picks a split)")
    eval_data: str | None = Field(None, description="held-out data, as --data (default: 5% "
                                  "of --data)")
    data_columns: dict[str, str] = Field(default_factory=dict, description="read other "
                                         "columns as ours: TARGET=COLUMN,... (prompt=question,"
                                         "response=answer; see docs/data.md)")
    max_length: int = Field(512, gt=1, description="maximum tokens per sequence")
    zero_padding: bool = Field(False, description="sft: pack several examples per sequence "
                               "(block-diagonal attention, positions restart per example)")
    split: str = Field("949,50,1", description="train,valid,test document ratio of an indexed "
                       "(.bin/.idx) pretraining dataset")
    tokenizer_name_or_path: str | None = Field(None, description="tokenizer directory (default: "
                                               "model_name_or_path)")

    # --- trainer (TrainingArguments names) ---
    output_dir: str = "output"
    max_steps: int = -1
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = Field(8, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(1, gt=0)
    learning_rate: float = Field(3e-4, ge=0)
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    warmup_steps: int = Field(0, ge=0)
    warmup_ratio: float = Field(0.0, ge=0, le=1)
    lr_scheduler_type: Literal["linear", "cosine", "constant"] = "linear"
    save_steps: int = Field(500, gt=0)
    save_total_limit: int | None = None
    logging_steps: int = Field(10, gt=0)
    eval_steps: int | None = None
    recompute: bool = Field(False, description="recompute activations in backward (less memory)")
    bf16: bool = False
    fp16: bool = False
    seed: int = 42
    resume: bool = Field(False, description="resume from the newest checkpoint in output_dir")
    resume_from_checkpoint: str | None = Field(None, description="resume from this checkpoint")
    continue_training: bool = Field(True, description="pretrain with --model_name_or_path: start "
                                    "from its weights (false: a fresh model of its config)")
    loggers: list[str] = Field(default_factory=list, description="training loggers besides "
                               "metrics.jsonl (always written), comma-separated: tensorboard, "
                               "visualdl, plot, ...; 'all' (installed ones) or 'none' "
                               "(PaddleNLP/Hugging Face: report_to)")
    logging_dir: str | None = Field(None, description="folder of TensorBoard/VisualDL event "
                                    "files (default: output_dir/runs)")

    #: validated options contributed by the selected plugins, by plugin kind (``"kind:name"``
    #: for a kind whose key names several plugins, e.g. ``"logger:tensorboard"``)
    plugin_options: dict[str, Any] = Field(default_factory=dict, exclude=True)

    @field_validator("data_columns", mode="before")
    @classmethod
    def _parse_columns(cls, value: Any) -> Any:
        """``"prompt=question,response=answer"`` (or a list of items, or a mapping)."""
        return parse_columns(value)

    @field_validator("loggers", mode="before")
    @classmethod
    def _split_loggers(cls, value: Any) -> Any:
        """``"tensorboard,plot"``, ``["tensorboard", "plot"]`` or ``"none"`` -> a list of
        names (``jsonl`` is always on and so not listed; ``none`` clears the list)."""
        if value is None:
            return []
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)):
            return value  # pydantic reports the type
        names: list[str] = []
        for item in value:
            if not isinstance(item, str):
                return value
            for name in item.split(","):
                name = name.strip()
                if name and name != "jsonl" and name not in names:
                    names.append(name)
        return [] if "none" in names else names


#: RunConfig field -> registry kind of the plugin it names (from :data:`paddlellm.kinds.KIND_TABLE`)
PLUGIN_FIELDS: dict[str, str] = field_kinds()
AUTO = "auto"
CORE_KEYS = tuple(k for k in RunConfig.model_fields if k != "plugin_options")


# --- reading files and flags ----------------------------------------------------------------

def load_config_file(path: str | Path) -> dict[str, Any]:
    """A flat mapping from a ``.json``, ``.yaml`` or ``.yml`` file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text at byte {exc.start} (a binary file?)") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"{path}: config files must end in .json, .yaml or .yml")
    except (json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
    except Exception as exc:  # yaml.YAMLError
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys to values")
    return data


def parse_overrides(args: Iterable[str]) -> dict[str, Any]:
    """``["--lr", "1e-4", "--bf16", "--weight_list", "1", "2"]`` -> a mapping of strings.

    ``--key value``, ``--key=value``, a bare ``--flag`` (true), ``--no_flag`` / ``--no-flag``
    (false) and ``--key v1 v2`` (a list). Dashes in keys become underscores.
    """
    out: dict[str, Any] = {}
    args = list(args)
    i = 0
    while i < len(args):
        tok = args[i]
        if not tok.startswith("--") or tok == "--":
            raise ConfigError(f"expected an option like --key value, got '{tok}'")
        key, eq, value = tok[2:].partition("=")
        key = key.replace("-", "_")
        i += 1
        if eq:
            out[key] = value
            continue
        values = []
        while i < len(args) and not (args[i].startswith("--") and len(args[i]) > 2):
            values.append(args[i])
            i += 1
        if not values:
            if key.startswith("no_") and key[3:]:
                out[key[3:]] = False
            else:
                out[key] = True
        else:
            out[key] = values[0] if len(values) == 1 else values
    return out


# --- validation ----------------------------------------------------------------------------

def closest_keys_message(key: str, valid: Iterable[str], what: str = "config key") -> str:
    valid = sorted(set(valid))
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    if not close:  # fall back to shared prefixes (``lr`` -> ``learning_rate`` is too far)
        close = [v for v in valid if v.startswith(key[:3])][:3]
    hint = f"closest valid keys: {', '.join(close)}" if close else "no close match"
    return f"unknown {what} '{key}' ({hint}); all valid keys: {', '.join(valid)}"


def normalise_value(value: Any, annotation: Any) -> Any:
    """Make flag strings fit their field: 'none' -> None, one value -> [value] for lists."""
    if isinstance(value, str) and value.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):  # Optional[list[...]]
        if any(typing.get_origin(arg) in (list, tuple) for arg in args):
            origin = list
    if origin in (list, tuple) and not isinstance(value, (list, tuple)):
        return [value]
    return value


def validate_model(model_cls: type[BaseModel], values: Mapping[str, Any], source: str) -> BaseModel:
    """``model_cls`` validated from flat ``values`` (flag strings normalised by
    :func:`normalise_value`); errors are one :class:`ConfigError` naming each bad key, its
    problem and the value given, prefixed by ``source`` (``"invalid options of ...: ..."``)."""
    fields = model_cls.model_fields
    values = {k: normalise_value(v, fields[k].annotation) if k in fields else v for k, v in values.items()}
    try:
        return model_cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"'{'.'.join(str(p) for p in err['loc'])}': {err['msg']} (got {err.get('input')!r})"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid {source}: {problems}") from None


def plugin_config_class(registry: "Registry", kind: str, name: str) -> type[BaseModel] | None:
    obj = registry.load(kind, name)
    cls = getattr(obj, "config_class", None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def build_run_config(
    file: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    registry: "Registry | None" = None,
) -> RunConfig:
    """Merge file and flags (flags win), check plugin names and keys, and validate.

    Without ``registry`` only the core keys are checked (no plugin lookups).
    """
    from .paddlenlp_args import resolve_data_folder, translate

    raw: dict[str, Any] = load_config_file(file) if file else {}
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        raw.update(overrides)
    raw, notes = translate(raw, file)  # PaddleNLP's argument-file keys and flags
    for note in notes:
        print(f"note: {note}", file=sys.stderr)

    core = {k: v for k, v in raw.items() if k in CORE_KEYS}
    extra = {k: v for k, v in raw.items() if k not in CORE_KEYS}
    config = validate_model(RunConfig, core, "config")
    if config.align and "stage" not in config.model_fields_set:
        if (registry is not None and not registry.has("alignment_loss", config.align)
                and registry.has("stage", config.align)):
            # --align NAME of a stage that is no loss (--align rm: the reward-model stage)
            config.stage, config.align = config.align, None
        else:
            config.stage = "align"  # --align without --stage runs the alignment stage
    config.data, config.eval_data = resolve_data_folder(config.data, config.eval_data,
                                                        config.stage)
    if registry is None:
        if extra:
            raise ConfigError(closest_keys_message(next(iter(extra)), CORE_KEYS))
        return config

    check_plugin_names(config, registry)
    plugin_classes: dict[str, type[BaseModel]] = {}
    who: dict[str, str] = {}  # options key -> "kind 'name'" for messages
    for kind, name in selected_plugins(config):
        cls = plugin_config_class(registry, kind, name)
        if cls is not None:
            key = options_key(kind, registry.get(kind, name).name)
            plugin_classes[key] = cls
            who[key] = f"{kind} '{name}'"

    owner: dict[str, str] = {}
    for kind, cls in plugin_classes.items():
        for key in cls.model_fields:
            if key in CORE_KEYS or key in owner:
                other = owner.get(key, "the core")
                raise ConfigError(f"config key '{key}' is claimed by both {other} and the "
                                  f"{kind} plugin")
            owner[key] = kind
    for key in extra:
        if key not in owner:
            raise ConfigError(closest_keys_message(key, [*CORE_KEYS, *owner]))
    config.plugin_options = {
        kind: validate_model(cls, {k: v for k, v in extra.items() if owner[k] == kind},
                             f"options of {who[kind]}")
        for kind, cls in plugin_classes.items()
    }
    return config


def selected_plugins(config: RunConfig) -> Iterator[tuple[str, str]]:
    """``(kind, name)`` of every plugin ``config`` names (``auto`` and unset skipped; each
    name of a list such as ``--loggers``)."""
    for field, kind in PLUGIN_FIELDS.items():
        value = getattr(config, field)
        for name in (value if isinstance(value, list) else [value]):
            if name is None or name == AUTO or (name == "all" and isinstance(value, list)):
                continue  # --loggers all: the session builds every installed logger
            if field == "device":  # "gpu:1" names the backend "gpu"
                name = name.partition(":")[0]
            yield kind, name


def check_plugin_names(config: RunConfig, registry: "Registry") -> None:
    """Every plugin named in ``config`` is installed (``auto`` is always valid)."""
    for kind, name in selected_plugins(config):
        registry.get(kind, name)  # raises UnknownPluginError listing the installed names


def check_run_paths(config: RunConfig) -> None:
    """The paths a run reads or writes are usable, checked before anything heavy starts:
    ``--model_name_or_path`` / ``--tokenizer_name_or_path`` are existing checkpoint folders,
    ``--output_dir`` is a folder (or can be made one). Errors name the option and the path."""
    for option in ("model_name_or_path", "tokenizer_name_or_path"):
        value = getattr(config, option)
        if not value:
            continue
        path = Path(value)
        if not path.exists():
            raise ConfigError(f"--{option} {value}: not found (expected a checkpoint folder "
                              "with config.json; models are never downloaded)")
        if not path.is_dir():
            raise ConfigError(f"--{option} {value}: is a file, expected a checkpoint folder")
        if option == "model_name_or_path" and not (path / "config.json").is_file():
            raise ConfigError(f"--{option} {value}: no config.json in that folder (not a "
                              "Hugging Face-layout checkpoint)")
    out = Path(config.output_dir)
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                which = "is" if folder == out else f"is inside {folder}, which is"
                raise ConfigError(f"--output_dir {config.output_dir}: {which} an existing file, "
                                  "not a folder")
            break


def dump_config(config: RunConfig) -> dict[str, Any]:
    """The resolved configuration, plugin options included, as plain JSON-able data."""
    data = config.model_dump(mode="json")
    for kind, opts in config.plugin_options.items():
        data.update(opts.model_dump(mode="json"))
    return data
