"""The public API for plugin authors: everything a plugin may import from the core.

Plugins (this repository's and third parties') import core names **only** from this module,
or from the public modules in :data:`PUBLIC_MODULES` (:mod:`paddlellm.interfaces`,
:mod:`paddlellm.errors`, :mod:`paddlellm.hookspecs`, :mod:`paddlellm.kinds`, whose names are
all re-exported here too); every other module of the core is an
implementation detail that may move. ``tests/test_plugin_contract.py`` fails when a plugin
under ``plugins/`` imports anything else (a private name, another module, another plugin).

Importing this module imports nothing heavy: each name is resolved on first access (PEP 562),
so a plugin's entry-point module can ``from paddlellm.api import hookimpl`` and stay
Paddle-free.

The names, by what they are for (``llm`` docs: ``docs/plugins.md``):

* **Hooks and kinds** — ``hookimpl``; ``KIND_TABLE``, ``Kind``, ``check_target``,
  ``missing_members``; ``get_plugin_manager``, ``import_target``, ``unknown_name_message``.
* **Protocols** (:mod:`paddlellm.interfaces`) — ``AlignmentLoss``, ``AttentionKernel``,
  ``AttentionSpec``, ``Backend``, ``KVCacheLayer``, ``MergeMethod``, ``ModelFamily``,
  ``PagedKVCacheLayer``, ``PeftMethod``, ``Quantizer``, ``Stage``, ``TrainerStrategy``,
  ``kernel_runs_on``, ``optional_members``.
* **Errors** — ``PaddleLLMError``, ``ConfigError``, ``DataFormatError``,
  ``UnknownPluginError``, ``PluginLoadError``, ``PluginContractError``,
  ``BackendUnavailableError``, ``CheckpointError``.
* **Models and tokenizers** — ``AutoModelForCausalLM``, ``AutoTokenizer``, ``quantizer_for``,
  ``quantize_model``, ``generate``, ``get_attention_kernel``, ``KVCache``, ``LayerKVCache``,
  ``BlockManager``, ``PagedKVCache``, ``PagedLayer``, ``resolve_model_path``;
  ``LLMEngine`` and ``SamplingParams`` (``LLMEngine.for_model(model, tokenizer)``: the
  inference engine around an in-memory model, reading its live parameters, e.g. an RLHF
  stage's rollouts with the adapters being trained).
* **Checkpoints** (Hugging Face layout, safetensors) — ``CheckpointReader``,
  ``SafetensorsFile``, ``TensorSource``, ``assign_array``, ``canonical_dtype``,
  ``convert_checkpoint``, ``convert_storage``, ``family_config``, ``parse_size``,
  ``read_generation_config``, ``read_json``, ``save_state_dict``, ``write_sharded``,
  ``STORAGE_NUMPY``, ``widen``.
* **Configuration** — ``RunConfig``, ``validate_model``, ``normalise_value``,
  ``load_config_file``, ``parse_overrides``, ``dump_config``, ``is_paddlenlp_config``,
  ``translate_quantize``.
* **PEFT helpers** (what the ``--peft`` path of a stage uses) — ``apply_peft``,
  ``disable_adapters``, ``is_peft_model``, ``merge_adapter``, ``read_adapter_config``,
  ``run_weights_source``, ``save_model_or_adapter``, ``setup_run_peft``,
  ``trainable_parameter_report``, ``unwrap``.
* **Data** — ``IGNORE_INDEX``, ``read_jsonl``, ``record_to_messages``, ``src_tgt_messages``,
  ``tokenize_all``, ``tokenize_conversation``, ``iter_lines``, ``parse_json_line``,
  ``FACTS``, ``demo_examples``, ``iter_demo_corpus``.
* **Training** (for stages) — ``train``, ``train_and_evaluate``, ``batch_loss``,
  ``build_optimizer``, ``resume_checkpoint``, ``MetricsLogger``, ``format_record``,
  ``logging_dir``, ``scalar_tag``, ``read_metrics`` (for training loggers),
  ``print_heading``, ``prepare_for_training``, ``resolve_run_model``, ``save_model``,
  ``exact_match``, ``generate_answers``, ``DEMO_MODEL_DIR``, ``INSTRUCT_DEMO_MODEL``,
  ``DEMO_TRAIN_EXAMPLES``,
  ``epoch_stream``.
* **Command line** — ``HelpOption``, ``PassThroughCommand``, ``canonical_args``,
  ``fields_help_options``, ``main`` (``llm``'s entry point, for a plugin command that
  re-enters it).
"""
from __future__ import annotations

import importlib
from typing import Any

#: core modules that are public as a whole: plugins may import from them directly
PUBLIC_MODULES: tuple[str, ...] = (
    "paddlellm.api",
    "paddlellm.interfaces",
    "paddlellm.errors",
    "paddlellm.hookspecs",
    "paddlellm.kinds",
)

#: public name -> ``"module:attribute"`` it is resolved from on first access
_EXPORTS: dict[str, str] = {
    # hooks, kinds, the plugin manager
    "hookimpl": "paddlellm.hookspecs:hookimpl",
    "KIND_TABLE": "paddlellm.kinds:KIND_TABLE",
    "Kind": "paddlellm.kinds:Kind",
    "check_target": "paddlellm.kinds:check_target",
    "missing_members": "paddlellm.kinds:missing_members",
    "get_plugin_manager": "paddlellm.plugin.manager:get_plugin_manager",
    "get_registry": "paddlellm.plugin.manager:get_registry",
    "import_target": "paddlellm.plugin.registry:import_target",
    "unknown_name_message": "paddlellm.plugin.registry:unknown_name_message",
    # protocols
    **{name: f"paddlellm.interfaces:{name}" for name in (
        "AlignmentLoss", "AttentionKernel", "AttentionSpec", "Backend", "KVCacheLayer",
        "MergeMethod", "ModelFamily", "PagedKVCacheLayer", "PeftMethod", "Quantizer", "Stage",
        "TrainerStrategy", "kernel_runs_on", "optional_members", "CausalLM", "KVCacheLayout",
        "QuantizedModule", "is_quantized_module", "LinearSpec", "WeightOnlyLinearKernel", "Reward",
        "TrainingLogger")},
    # errors
    **{name: f"paddlellm.errors:{name}" for name in (
        "PaddleLLMError", "ConfigError", "DataFormatError", "UnknownPluginError",
        "PluginLoadError", "PluginContractError", "BackendUnavailableError")},
    "CheckpointError": "paddlellm.checkpoint:CheckpointError",
    "CheckpointFormatError": "paddlellm.checkpoint:CheckpointFormatError",
    # models and tokenizers
    "AutoModelForCausalLM": "paddlellm.modeling.auto:AutoModelForCausalLM",
    "AutoTokenizer": "paddlellm.tokenizer:AutoTokenizer",
    "Tokenizer": "paddlellm.tokenizer:Tokenizer",
    "TOKENIZER_FILES": "paddlellm.tokenizer:TOKENIZER_FILES",
    "quantizer_for": "paddlellm.modeling.auto:quantizer_for",
    "family_for_model_type": "paddlellm.modeling.auto:family_for_model_type",
    "choose_family": "paddlellm.modeling.auto:choose_family",
    "quantize_model": "paddlellm.modeling.auto:quantize_model",
    "generate": "paddlellm.modeling.generation:generate",
    "get_attention_kernel": "paddlellm.modeling.attention:get_attention_kernel",
    "get_linear_kernel": "paddlellm.modeling.linear:get_linear_kernel",
    "KVCache": "paddlellm.modeling.kv_cache:KVCache",
    "DEFAULT_KV_CACHE_LAYOUT": "paddlellm.modeling.kv_layout:DEFAULT_KV_CACHE_LAYOUT",
    "get_kv_cache_layout": "paddlellm.modeling.kv_layout:get_kv_cache_layout",
    "load_pretrained": "paddlellm.checkpoint:load_pretrained",
    "load_hf_weights": "paddlellm.checkpoint:load_hf_weights",
    "save_pretrained": "paddlellm.checkpoint:save_pretrained",
    "quantized_modules": "paddlellm.checkpoint:quantized_modules",
    "LayerKVCache": "paddlellm.modeling.kv_cache:LayerKVCache",
    "BlockManager": "paddlellm.modeling.kv_manager:BlockManager",
    "PagedKVCache": "paddlellm.modeling.kv_manager:PagedKVCache",
    "PagedLayer": "paddlellm.modeling.kv_manager:PagedLayer",
    "LLMEngine": "paddlellm.engine.llm_engine:LLMEngine",
    "SamplingParams": "paddlellm.engine.sampling:SamplingParams",
    "resolve_model_path": "paddlellm.hub:resolve_model_path",
    # checkpoints
    **{name: f"paddlellm.checkpoint:{name}" for name in (
        "CheckpointReader", "assign_array", "canonical_dtype", "convert_checkpoint",
        "family_config", "parse_size", "read_generation_config", "read_json", "read_model_config",
        "save_state_dict")},
    "SafetensorsFile": "paddlellm.checkpoint.safetensors_io:SafetensorsFile",
    "TensorSource": "paddlellm.checkpoint.safetensors_io:TensorSource",
    "write_sharded": "paddlellm.checkpoint.writer:write_sharded",
    "STORAGE_NUMPY": "paddlellm.checkpoint._dtypes:STORAGE_NUMPY",
    "convert_storage": "paddlellm.checkpoint._dtypes:convert_storage",
    "widen": "paddlellm.checkpoint._dtypes:widen",
    # configuration
    **{name: f"paddlellm.plugin.config:{name}" for name in (
        "RunConfig", "validate_model", "normalise_value", "load_config_file",
        "parse_overrides", "dump_config")},
    "is_paddlenlp_config": "paddlellm.plugin.paddlenlp_args:is_paddlenlp_config",
    "translate_quantize": "paddlellm.plugin.paddlenlp_args:translate_quantize",
    # PEFT helpers
    **{name: f"paddlellm.modeling.peft:{name}" for name in (
        "apply_peft", "disable_adapters", "is_peft_model", "merge_adapter",
        "read_adapter_config", "run_weights_source", "save_model_or_adapter",
        "setup_run_peft", "trainable_parameter_report", "unwrap")},
    # data
    **{name: f"paddlellm.data.sft:{name}" for name in (
        "IGNORE_INDEX", "read_jsonl", "record_to_messages", "src_tgt_messages",
        "tokenize_all", "tokenize_conversation")},
    "iter_lines": "paddlellm.data.textfile:iter_lines",
    "parse_json_line": "paddlellm.data.textfile:parse_json_line",
    "FACTS": "paddlellm.data.demo:FACTS",
    "demo_examples": "paddlellm.data.demo:demo_examples",
    "iter_demo_corpus": "paddlellm.data.demo:iter_demo_corpus",
    # training
    "train": "paddlellm.training.loop:train",
    "train_and_evaluate": "paddlellm.training.loop:train_and_evaluate",
    "batch_loss": "paddlellm.training.loss:batch_loss",
    "build_optimizer": "paddlellm.training.optim:build_optimizer",
    "resume_checkpoint": "paddlellm.training.checkpointing:resume_checkpoint",
    "MetricsLogger": "paddlellm.training.metrics:MetricsLogger",
    "logging_dir": "paddlellm.loggers:logging_dir",
    "scalar_tag": "paddlellm.loggers:scalar_tag",
    "read_metrics": "paddlellm.loggers.jsonl:read_records",
    "format_record": "paddlellm.training.metrics:format_record",
    "print_heading": "paddlellm.training.metrics:print_heading",
    "prepare_for_training": "paddlellm.modeling.prepare:prepare_for_training",
    "resolve_run_model": "paddlellm.training.start:resolve_run_model",
    "save_model": "paddlellm.modeling.prepare:save_model",
    "exact_match": "paddlellm.modeling.evaluation:exact_match",
    "generate_answers": "paddlellm.modeling.evaluation:generate_answers",
    "DEMO_MODEL_DIR": "paddlellm.modeling.prepare:DEMO_MODEL_DIR",
    "INSTRUCT_DEMO_MODEL": "paddlellm.modeling.prepare:INSTRUCT_DEMO_MODEL",
    "DEMO_TRAIN_EXAMPLES": "paddlellm.training.stages.sft:DEMO_TRAIN_EXAMPLES",
    "epoch_stream": "paddlellm.training.stages.sft:epoch_stream",
    "TrainingSession": "paddlellm.training:TrainingSession",
    "Demo": "paddlellm.training:Demo",
    "warm_up": "paddlellm.training.stages.sft:warm_up",
    # command line
    "HelpOption": "paddlellm.cli.options:HelpOption",
    "PassThroughCommand": "paddlellm.cli.options:PassThroughCommand",
    "canonical_args": "paddlellm.cli.options:canonical_args",
    "fields_help_options": "paddlellm.cli.options:fields_help_options",
    "main": "paddlellm.cli:main",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"paddlellm.api has no name {name!r} (the public names are "
                             "paddlellm.api.__all__)")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
