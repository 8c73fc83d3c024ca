"""The model of a run: loaded from a checkpoint or built from ``--model``, prepared for
training (``--recompute``, ``--quant_type``) and saved in the Hugging Face layout; the
bundled demo models.

Which checkpoint a run starts from (``--model`` honoured in every stage) is decided by
:func:`paddlellm.training.start.resolve_run_model`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

#: the demo models that ship in the package, by family (scripts/build_demo_model.py)
ASSETS = Path(__file__).parents[1] / "assets"
#: the bundled (pretrained-only) demo model of the qwen2 family, the fine-tuning demos' start
DEMO_MODEL_DIR = ASSETS / "qwen-demo"
BUNDLED_DEMO_MODELS = {"qwen2": DEMO_MODEL_DIR}
#: the instruction-tuned demo model (the inference commands' default)
INSTRUCT_DEMO_MODEL = ASSETS / "qwen-demo-instruct"
#: the bundled demo's size (Hugging Face config keys), used when a run has no data and
#: ``--model`` names a family rather than a sized preset
DEMO_SIZE = {"hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 4,
             "num_attention_heads": 4, "num_key_value_heads": 2}


def demo_model_dir() -> Path:
    """:data:`DEMO_MODEL_DIR`, checked (a missing bundled model is a clear error)."""
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        from ..errors import ConfigError

        raise ConfigError(f"the bundled demo model is missing from {DEMO_MODEL_DIR}; rebuild "
                          "it with `python scripts/build_demo_model.py`")
    return DEMO_MODEL_DIR


def build_model(ctx: Any, *, vocab_size: int, demo: bool, tokenizer: Any = None,
                path: str | None = None):
    """A causal LM for the run in ``ctx`` (float32; mixed precision is the loop's job).

    Loaded from ``path`` (a checkpoint to resume), else ``--model_name_or_path``, else
    built from the ``--model`` preset.
    """
    from .auto import AutoModelForCausalLM, family_by_name

    config = ctx.config
    if not path and config.model_name_or_path and not config.continue_training:
        # PaddleNLP's continue_training=false: a fresh model of the checkpoint's config
        return prepare_for_training(fresh_model_like(config.model_name_or_path), config)
    if path or config.model_name_or_path:
        model = AutoModelForCausalLM.from_pretrained(path or config.model_name_or_path)
        return prepare_for_training(model, config)
    family = family_by_name(config.model)
    overrides: dict[str, Any] = {"vocab_size": vocab_size,
                                 "max_position_embeddings": max(config.max_length, 128)}
    if tokenizer is not None:
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tokenizer, key, None)
            if value is not None:
                overrides[key] = value
    if demo and config.model in (family.name, *getattr(family, "aliases", ())):
        overrides.update(DEMO_SIZE)
    return prepare_for_training(AutoModelForCausalLM.from_config(config.model, **overrides),
                                config)


def fresh_model_like(path: str):
    """A randomly initialised model with the architecture of the checkpoint at ``path``."""
    from pathlib import Path

    from .auto import AutoModelForCausalLM, family_for_model_type
    from ..checkpoint import read_json
    from ..errors import ConfigError

    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"--model_name_or_path {path}: no config.json")
    hf = read_json(config_path)
    family = family_for_model_type(hf.get("model_type", ""), hf, config_path)
    return AutoModelForCausalLM.from_config(family.config_from_hf(hf))


def prepare_for_training(model, config):
    """Apply the run's model-level training options (``--recompute``)."""
    if config.recompute:
        if not hasattr(model, "enable_recompute"):
            from ..errors import ConfigError

            raise ConfigError(f"--recompute: {type(model).__name__} has no enable_recompute()")
        model.enable_recompute()
    if config.quant_type and not getattr(model, "quantization_config", None):
        from .auto import quantize_model, quantizer_for
        from ..errors import ConfigError

        if not config.peft:  # the integer weights cannot train; only adapters on them can
            raise ConfigError(f"--quant_type {config.quant_type} trains adapters on a quantized "
                              "base (QLoRA): add --peft (e.g. --peft lora)")
        if getattr(quantizer_for(config.quant_type), "needs_calibration", False):
            raise ConfigError(f"--quant_type {config.quant_type} needs calibration data: run "
                              "`llm quantize` first and pass its output as --model_name_or_path")
        options = config.plugin_options.get("quantizer")
        model = quantize_model(model, config.quant_type,
                               config=options.model_dump() if options is not None else None)
    return model


def save_model(model, tokenizer, directory: str) -> None:
    """The Hugging Face layout of a run's model: weights, config and tokenizer."""
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
