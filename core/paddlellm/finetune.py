"""The ``sft`` stage: supervised fine-tuning on conversations, loss on responses only.

Without ``--data`` it fine-tunes the demo model of ``--model``'s family (bundled, or built
once: :func:`paddlellm.models.resolve_run_model`) on the generated demo instructions and
reports held-out exact match before and after. ``--zero_padding`` packs several
examples per sequence with block-diagonal attention and restarting positions.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .errors import ConfigError

DEMO_TRAIN_EXAMPLES = 3000
DEMO_EVAL_EXAMPLES = 300
#: settings of the bundled demo, applied to the options the user did not set
DEMO_DEFAULTS = {"learning_rate": 2e-3, "num_train_epochs": 2.0, "warmup_steps": 20,
                 "lr_scheduler_type": "cosine", "max_length": 128}
#: the bundled (pretrained-only) demo model (built by scripts/build_demo_model.py)
DEMO_MODEL_DIR = Path(__file__).parent / "assets" / "qwen-demo"


def demo_model_dir() -> Path:
    if not (DEMO_MODEL_DIR / "config.json").is_file():
        raise ConfigError(f"the bundled demo model is missing from {DEMO_MODEL_DIR}; rebuild it "
                          "with `python scripts/build_demo_model.py`")
    return DEMO_MODEL_DIR


def apply_demo_defaults(config):
    """``config`` with :data:`DEMO_DEFAULTS` for every option not given explicitly."""
    unset = {k: v for k, v in DEMO_DEFAULTS.items() if k not in config.model_fields_set}
    return config.model_copy(update=unset), unset


def _datasets(config) -> tuple[list, list, list[dict] | None]:
    """(train conversations, eval conversations, eval {"src","tgt"} pairs for exact match)."""
    from .data.sft import read_sft_jsonl, record_to_messages

    if config.data is None:
        from .data.demo import demo_examples

        train = demo_examples(DEMO_TRAIN_EXAMPLES, split="train", seed=config.seed)
        held = demo_examples(DEMO_EVAL_EXAMPLES, split="eval", seed=config.seed)
        as_conv = lambda rows: [record_to_messages(r, "demo") for r in rows]
        return as_conv(train), as_conv(held), held
    train = read_sft_jsonl(config.data)
    if config.eval_data:
        held = read_sft_jsonl(config.eval_data)
    else:
        n_eval = max(1, len(train) // 20)
        train, held = train[n_eval:], train[:n_eval]
    pairs = [{"src": c[-2]["content"], "tgt": c[-1]["content"]} for c in held
             if len(c) == 2 and c[0]["role"] == "user" and c[-1]["role"] == "assistant"]
    return train, held, pairs or None


def make_batches(examples: Sequence, config, pad_id: int, *, seed: int, shuffle: bool
                 ) -> list[dict[str, np.ndarray]]:
    """One epoch of batches (packed with ``--zero_padding``, else right-padded)."""
    from .data.sft import pack_examples, packed_batch, pad_batch

    order = (np.random.default_rng(seed).permutation(len(examples)) if shuffle
             else np.arange(len(examples)))
    ordered = [examples[i] for i in order]
    size = config.per_device_train_batch_size
    if config.zero_padding:
        bins = pack_examples(ordered, config.max_length)
        return [packed_batch(bins[i:i + size], pad_id) for i in range(0, len(bins), size)]
    return [pad_batch(ordered[i:i + size], pad_id) for i in range(0, len(ordered), size)]


def epoch_stream(examples: Sequence, config, pad_id: int, shard) -> Iterator[dict]:
    """Endless batches, reshuffled each epoch; ``shard`` picks this rank's batches."""
    epoch = 0
    while True:
        batches = make_batches(examples, config, pad_id, seed=config.seed + epoch, shuffle=True)
        yield from (batches[i] for i in shard(list(range(len(batches)))))
        epoch += 1


def sft_stage(ctx) -> dict[str, Any]:
    import paddle

    from .auto import AutoModelForCausalLM
    from .data.sft import padding_ratio, tokenize_all
    from .models import prepare_for_training, resolve_run_model
    from .peft import (run_weights_source, save_model_or_adapter, setup_run_peft,
                       trainable_parameter_report)
    from .evaluation import exact_match
    from .tokenizer import AutoTokenizer
    from .train.checkpointing import resume_checkpoint
    from .train.loop import evaluate_lm, train_and_evaluate
    from .train.loss import batch_loss
    from .train.metrics import MetricsLogger, print_heading
    from .train.optim import build_optimizer

    config, strategy = ctx.config, ctx.strategy
    is_demo = config.data is None
    demo_defaults: dict = {}
    if is_demo:
        config, demo_defaults = apply_demo_defaults(config)
        ctx.use_config(config)
    start = resolve_run_model(ctx)  # --model_name_or_path, else --model's demo model
    paddle.seed(config.seed)
    resume_dir = resume_checkpoint(config)
    source = str(resume_dir or start)
    tokenizer = AutoTokenizer.from_pretrained(source)
    weights = run_weights_source(config, resume_dir, start)  # --peft: the base
    print_heading(f"SFT ({config.peft or 'all parameters'})", enabled=strategy.is_main_process)
    model = prepare_for_training(AutoModelForCausalLM.from_pretrained(weights), config)
    model = strategy.wrap_model(setup_run_peft(model, config, ctx.options("peft_method"),
                                               resume_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    train_conv, eval_conv, eval_pairs = _datasets(config)
    train_ex, dropped = tokenize_all(tokenizer, train_conv, config.max_length)
    eval_ex, _ = tokenize_all(tokenizer, eval_conv, config.max_length)
    if not train_ex:
        raise ConfigError(f"no training example fits --max_length {config.max_length}")
    one_epoch = make_batches(train_ex, config, pad_id, seed=config.seed, shuffle=True)
    unpacked = make_batches(train_ex, config.model_copy(update={"zero_padding": False}), pad_id,
                            seed=config.seed, shuffle=True)
    per_step = config.gradient_accumulation_steps * strategy.world_size
    total_steps = (config.max_steps if config.max_steps > 0
                   else max(1, math.ceil(config.num_train_epochs * len(one_epoch) / per_step)))
    optimizer, scheduler = build_optimizer(model, config, total_steps)
    optimizer = strategy.wrap_optimizer(optimizer)
    eval_batches = make_batches(eval_ex, config.model_copy(update={"zero_padding": False}),
                                pad_id, seed=0, shuffle=False)
    evaluate = lambda m: evaluate_lm(m, eval_batches, batch_loss)
    logger = MetricsLogger(ctx.output_dir / "metrics.jsonl", enabled=strategy.is_main_process)
    if resume_dir is None:
        logger.log({"step": 0, "train_examples": len(train_ex), "dropped_too_long": dropped,
                    "batches_per_epoch": len(one_epoch), "padding_ratio": padding_ratio(one_epoch),
                    "padding_ratio_unpacked": padding_ratio(unpacked)})

    def em() -> dict:
        if not eval_pairs:
            return {}
        return exact_match(model, tokenizer, eval_pairs,
                           batch_size=config.per_device_eval_batch_size * 4)

    state, before, after = train_and_evaluate(
        model, optimizer, scheduler, epoch_stream(train_ex, config, pad_id, strategy.shard),
        batch_loss, config=config, ctx=ctx, total_steps=total_steps, logger=logger,
        evaluate=evaluate, extra_metrics=em,
        save=lambda d: save_model_or_adapter(model, tokenizer, d),
        resume_from=str(resume_dir) if resume_dir else None)
    summary = {
        "stage": "sft", "demo": is_demo, "demo_defaults": demo_defaults, "model": start,
        "steps": state.step,
        "train_examples": len(train_ex),
        "train_loss_first": state.losses[0], "train_loss_last": state.losses[-1],
        "eval_loss_before": before["eval_loss"], "eval_loss_after": after["eval_loss"],
        "padding_ratio": padding_ratio(one_epoch),
        "padding_ratio_unpacked": padding_ratio(unpacked),
        "output_dir": str(ctx.output_dir),
    }
    trainable, total, _ = trainable_parameter_report(model)
    summary.update(peft=config.peft, trainable_params=trainable, total_params=total,
                   trainable_percent=100.0 * trainable / max(total, 1))
    if eval_pairs:
        summary.update(exact_match_before=before["exact_match"],
                       exact_match_after=after["exact_match"], eval_examples=after["count"],
                       exact_match_by_task_before=before.get("by_task", {}),
                       exact_match_by_task_after=after.get("by_task", {}),
                       samples_after=after["samples"])
    return summary
