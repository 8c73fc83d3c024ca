"""Which checkpoint a training run starts from, honouring ``--model``.

:func:`resolve_run_model` is the one place where a stage learns which checkpoint it starts
from, so ``--model`` means the same in every stage (and the same as in ``llm models``): a
family, alias or preset name whose *family* the run uses. With ``--model_name_or_path`` the
checkpoint's family must be that family; without it, fine-tuning stages start from the
bundled demo model of the family, or from a demo-size model of the family pretrained on the
demo corpus once (the ``pretrain`` stage) and cached under
``$XDG_CACHE_HOME/paddlellm/demo-models/<family>``.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..modeling.prepare import BUNDLED_DEMO_MODELS

#: how a demo model of a family without a bundled one is built: the recipe of the bundled
#: one (scripts/build_demo_model.py), on the generated demo corpus
DEMO_PRETRAIN = {"max_steps": 1200, "max_length": 128, "per_device_train_batch_size": 16,
                 "learning_rate": 3e-3, "warmup_steps": 20, "lr_scheduler_type": "cosine",
                 "logging_steps": 25, "seed": 42}


def demo_cache_dir() -> Path:
    """Where demo models built for families without a bundled one are kept."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "paddlellm" / "demo-models"


def checkpoint_family(path: str | os.PathLike) -> Any:
    """The registered family of the checkpoint in ``path`` (by ``model_type`` in its
    ``config.json``)."""
    from ..modeling.auto import family_for_model_type
    from ..checkpoint import read_json
    from ..errors import ConfigError

    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        raise ConfigError(f"--model_name_or_path {path}: no config.json there (a checkpoint "
                          "directory in the Hugging Face layout is expected)")
    hf = read_json(config_path)
    model_type = hf.get("model_type")
    if not model_type:
        raise ConfigError(f"{config_path} has no 'model_type'")
    return family_for_model_type(model_type, hf, config_path)


def resolve_run_model(ctx: Any, *, pretrained: bool = True) -> str | None:
    """The checkpoint the run in ``ctx`` starts from, honouring ``--model``.

    * ``--model_name_or_path``: that checkpoint; when ``--model`` was given too, the
      checkpoint's family must be the one ``--model`` names (a preset such as
      ``llama-tiny`` names its family), else a :class:`ConfigError` says both.
    * otherwise, with ``pretrained`` (fine-tuning stages): the bundled demo model of the
      family, or a demo model built for it (:func:`demo_model_for_family`).
    * otherwise None: the stage builds a fresh model from the ``--model`` preset.
    """
    from ..modeling.auto import family_by_name
    from ..errors import ConfigError

    config = ctx.config
    family = family_by_name(config.model)  # an unknown name lists the installed ones
    if config.model_name_or_path:
        found = checkpoint_family(config.model_name_or_path)
        if "model" in config.model_fields_set and found.name != family.name:
            raise ConfigError(
                f"--model {config.model} names the {family.name} family but "
                f"--model_name_or_path {config.model_name_or_path} holds a {found.name} "
                f"checkpoint: pass --model {found.name} (or leave --model out to use the "
                "checkpoint's family)")
        return str(config.model_name_or_path)
    if not pretrained:
        return None
    return str(demo_model_for_family(ctx, family))


def demo_model_for_family(ctx: Any, family: Any) -> Path:
    """The bundled demo model of ``family``, or one pretrained on the demo corpus with the
    bundled one's recipe (:data:`DEMO_PRETRAIN`) and cached; built once, with progress."""
    bundled = BUNDLED_DEMO_MODELS.get(family.name)
    if bundled is not None:
        if not (bundled / "config.json").is_file():
            from ..errors import ConfigError

            raise ConfigError(f"the bundled demo model is missing from {bundled}; rebuild it "
                              "with `python scripts/build_demo_model.py`")
        _announce(ctx, f"model: --model {ctx.config.model} -> {family.name} family, the bundled "
                       f"demo model ({bundled})")
        return bundled
    target = demo_cache_dir() / family.name
    if (target / "config.json").is_file() and (target / "BUILD.json").is_file():
        _announce(ctx, f"model: --model {ctx.config.model} -> {family.name} family, the demo "
                       f"model built earlier ({target})")
        return target
    return build_demo_model(ctx, family, target)


def build_demo_model(ctx: Any, family: Any, target: Path, **recipe: Any) -> Path:
    """Pretrain a demo-size ``family`` model on the demo corpus (the ``pretrain`` stage with
    :data:`DEMO_PRETRAIN`, overridden by ``recipe``) and move it to ``target``."""
    import json

    from .metrics import print_heading

    # the registered ``pretrain`` stage (by name: this module sits below the stages)
    pretrain_stage = ctx.registry.load("stage", "pretrain")
    recipe = {**DEMO_PRETRAIN, **recipe}
    strategy = ctx.strategy
    building = target.with_name(target.name + ".building")
    if strategy.is_main_process:
        shutil.rmtree(building, ignore_errors=True)
    strategy.barrier()
    print_heading(f"No bundled {family.name} demo model: pretraining one on the demo corpus "
                  f"({recipe['max_steps']} steps, once; cached in {target})",
                  enabled=strategy.is_main_process)
    config = ctx.config.model_copy(update={
        **recipe, "model": family.name, "model_name_or_path": None, "data": None,
        "eval_data": None, "peft": None, "quant_type": None, "recompute": False,
        "bf16": False, "fp16": False, "resume": False, "resume_from_checkpoint": None,
        "tokenizer_name_or_path": None, "num_train_epochs": 1.0,
        "gradient_accumulation_steps": 1, "eval_steps": None,
        "save_steps": recipe["max_steps"] + 1, "output_dir": str(building)})
    summary = pretrain_stage(replace(ctx, config=config))
    if strategy.is_main_process:
        (building / "BUILD.json").write_text(json.dumps(
            {"recipe": recipe, "family": family.name, "summary": summary}, indent=2))
        shutil.rmtree(target, ignore_errors=True)
        building.rename(target)
        print(f"demo {family.name} model saved to {target} (held-out perplexity "
              f"{summary['eval_ppl_before']:.1f} -> {summary['eval_ppl_after']:.2f})",
              file=sys.stderr, flush=True)
    strategy.barrier()
    return target


def _announce(ctx: Any, text: str) -> None:
    if ctx.strategy.is_main_process:
        print(text, file=sys.stderr, flush=True)
