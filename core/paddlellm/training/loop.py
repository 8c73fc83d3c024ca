"""The training loop: short, readable, built from components.

``train`` runs optimizer steps of ``gradient_accumulation_steps`` micro-batches each, logs
loss / learning rate / tokens per second, evaluates every ``eval_steps`` and saves a
checkpoint every ``save_steps``. The stage supplies the model, the batches and ``step_loss``
(how a batch becomes a loss), so pretraining, SFT and alignment share this loop.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import paddle

from .checkpointing import save_checkpoint
from .metrics import MetricsLogger
from .state import load_training_state, read_trainer_state, save_training_state

# step_loss(model, batch) -> (mean loss tensor, number of target tokens)
StepLoss = Callable[[paddle.nn.Layer, dict], "tuple[paddle.Tensor, int]"]
Evaluate = Callable[[paddle.nn.Layer], dict]


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # target tokens trained on
    losses: list[float] = field(default_factory=list)  # mean loss of every optimizer step
    evals: list[dict] = field(default_factory=list)


def autocast(config, backend) -> contextlib.AbstractContextManager:
    """Mixed precision where the backend supports it (checked when the run is composed)."""
    if config.bf16 or config.fp16:
        return paddle.amp.auto_cast(dtype="bfloat16" if config.bf16 else "float16", level="O1")
    return contextlib.nullcontext()


def evaluate_lm(model: paddle.nn.Layer, batches: list[dict], step_loss: StepLoss) -> dict:
    """Token-weighted mean loss and perplexity over ``batches``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with paddle.no_grad():
        for batch in batches:
            loss, n = step_loss(model, batch)
            total += float(loss) * n
            count += n
    if was_training:
        model.train()
    mean = total / max(count, 1)
    return {"eval_loss": mean, "eval_ppl": math.exp(min(mean, 50.0)), "eval_tokens": count}


def train(
    model: paddle.nn.Layer,
    optimizer: Any,
    scheduler: Any,
    batches: Iterator[dict],
    step_loss: StepLoss,
    *,
    config: Any,
    ctx: Any,
    total_steps: int,
    logger: MetricsLogger,
    evaluate: Evaluate | None = None,
    save: Callable[[str], None] | None = None,
    resume_from: str | None = None,
) -> TrainState:
    """Run ``total_steps`` optimizer steps over ``batches`` (which must not run dry).

    ``save(dir)`` writes the model (and tokenizer) of a checkpoint; the loop adds optimizer,
    scheduler and trainer state. ``resume_from`` (a checkpoint folder, whose weights the
    stage has already loaded) restores them and skips the batches already consumed. Random
    state is re-seeded from ``(seed, step, rank)`` every step, so a resumed run continues
    exactly as an uninterrupted one would.
    """
    state = TrainState()
    strategy = ctx.strategy
    accum = config.gradient_accumulation_steps
    if resume_from is not None:
        saved = load_training_state(resume_from, model, optimizer, scheduler)
        state.step, state.tokens = saved["step"], saved["tokens"]
        state.losses = list(saved.get("losses", []))
        for _ in range(state.step * accum):
            next(batches)
        logger.truncate_after(state.step)
    model.train()
    # intermediate checkpoints need the optimizer state on the main process; a strategy that
    # splits it (``can_checkpoint = False``, tensor parallel) saves the final model only
    can_checkpoint = getattr(strategy, "can_checkpoint", True)
    noted_no_checkpoints = False
    window_tokens, window_start = 0, time.perf_counter()
    logger.start(total_steps, done=state.step)
    while state.step < total_steps:
        # a function of (step, process): exact on resume, distinct dropout on every rank
        paddle.seed(config.seed + state.step + 1_000_003 * strategy.rank)
        step_loss_sum = 0.0
        for _ in range(accum):
            batch = next(batches)
            with autocast(config, ctx.backend):
                loss, n_tokens = step_loss(model, batch)
            (loss / accum).backward()
            step_loss_sum += float(loss)
            state.tokens += n_tokens
            window_tokens += n_tokens
        optimizer.step()
        optimizer.clear_grad()
        scheduler.step()
        state.step += 1
        state.losses.append(strategy.all_reduce_mean(step_loss_sum / accum))

        if state.step % config.logging_steps == 0 or state.step == total_steps:
            elapsed = time.perf_counter() - window_start
            recent = state.losses[-config.logging_steps:]
            logger.log({"step": state.step, "loss": sum(recent) / len(recent),
                        "lr": optimizer.get_lr(),
                        "tokens_per_sec": window_tokens * strategy.world_size / max(elapsed, 1e-9)})
            window_tokens, window_start = 0, time.perf_counter()
        if evaluate is not None and config.eval_steps and state.step % config.eval_steps == 0:
            metrics = {"step": state.step, **evaluate(model)}
            state.evals.append(metrics)
            logger.log(metrics)
        due = save is not None and state.step % config.save_steps == 0 and state.step < total_steps
        if due and not can_checkpoint:  # said once per run, on the main process
            if not noted_no_checkpoints and strategy.is_main_process:
                print(f"note: --strategy {getattr(strategy, 'name', strategy)}: no intermediate "
                      "checkpoints (the optimizer state is split over the processes); the final "
                      "model is saved")
            noted_no_checkpoints = True
        elif due:
            if strategy.is_main_process:
                def write(directory: str) -> None:
                    save(directory)
                    save_training_state(directory, model, optimizer, scheduler)

                save_checkpoint(config.output_dir, state.step, write,
                                {"step": state.step, "tokens": state.tokens,
                                 "losses": state.losses},
                                keep=config.save_total_limit)
                logger.saved(state.step)
            strategy.barrier()
    logger.finish()
    return state



def train_and_evaluate(
    model: paddle.nn.Layer,
    optimizer: Any,
    scheduler: Any,
    batches: Iterator[dict],
    step_loss: StepLoss,
    *,
    config: Any,
    ctx: Any,
    total_steps: int,
    logger: MetricsLogger,
    evaluate: Evaluate,
    save: Callable[[str], None],
    extra_metrics: Callable[[], dict] | None = None,
    resume_from: str | None = None,
) -> tuple[TrainState, dict, dict]:
    """What every training stage does around :func:`train`: evaluate before (read back from
    the interrupted run's step-0 record when resuming) and after, each logged without the
    bulky ``samples``/``by_task`` keys, then ``save`` the final model into the output
    directory on the main process. ``evaluate(model)`` also runs every ``eval_steps``;
    ``extra_metrics()`` (e.g. exact match) only before and after. When the loop has just
    evaluated the last step, that evaluation is "after" (logged once; the extra metrics get a
    record of their own). Returns ``(state, before, after)``."""
    def measure() -> dict:
        return {**evaluate(model), **(extra_metrics() if extra_metrics else {})}

    def loggable(metrics: dict) -> dict:
        return {k: v for k, v in metrics.items() if k not in ("samples", "by_task")}

    if resume_from:  # continue the interrupted run's metrics file, cut at its step
        logger.truncate_after(read_trainer_state(resume_from)["step"])
    before = logger.initial_eval() if resume_from else None
    if before is None:
        before = measure()
        logger.log({"step": 0, **loggable(before)})
    state = train(model, optimizer, scheduler, batches, step_loss, config=config, ctx=ctx,
                  total_steps=total_steps, logger=logger, evaluate=evaluate, save=save,
                  resume_from=resume_from)
    last = state.evals[-1] if state.evals and state.evals[-1]["step"] == state.step else None
    if last is None:
        after = measure()
        logger.log({"step": state.step, **loggable(after)})
    else:  # the loop has just evaluated this step: one eval record per step, not two
        extra = extra_metrics() if extra_metrics else {}
        after = {**{k: v for k, v in last.items() if k != "step"}, **extra}
        if loggable(extra):
            logger.log({"step": state.step, **loggable(extra)})
    save_final(ctx.strategy, model, save, str(ctx.output_dir))
    logger.close()  # the loggers' on_end: plots drawn, event files closed
    return state, before, after


def save_final(strategy: Any, model: paddle.nn.Layer, save: Callable[[str], None],
               directory: str) -> None:
    """``save(directory)`` on the main process. A strategy whose weights are split over the
    processes (tensor parallel) provides ``gathered(model)``: a context, entered on every
    process (it is collective), in which the main process's ``model`` saves the full weights."""
    gathered = getattr(strategy, "gathered", None)
    context = gathered(model) if gathered is not None else contextlib.nullcontext()
    with context:
        if strategy.is_main_process:
            save(directory)

