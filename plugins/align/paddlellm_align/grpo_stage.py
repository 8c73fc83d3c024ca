"""The ``grpo`` stage: Group Relative Policy Optimization (``llm run --align grpo``).

trl's ``GRPOTrainer`` shape and option names. Each optimizer step takes
``per_device_train_batch_size / num_generations`` prompts per micro-batch, samples
``num_generations`` completions of each through the engine with the policy's current
weights (:class:`~paddlellm_align.rl_common.Rollouts`), scores them with ``--reward``,
normalises the rewards within each prompt's group (:func:`~paddlellm_align.rl_losses.
group_advantages`) and minimises the clipped objective (:func:`~paddlellm_align.rl_losses.
grpo_loss`, ``--loss_type grpo|dr_grpo|dapo|bnpo``), with the k3 KL to the reference when
``--beta`` > 0 (the model with its adapters disabled under ``--peft``, else a frozen copy).
``--num_iterations`` > 1 reuses each generation for that many optimizer steps (the ratio to
the sampling policy's log-probs is then not 1 and clipping acts).

Logged per step (means since the previous record): ``reward``, ``reward_std``,
``frac_reward_zero_std``, ``kl`` (``--beta`` > 0), ``completion_length``, the clip ratios
and ``rollout_share`` (sampling's share of the wall time of training so far). Held-out:
the greedy completions' mean reward and, where prompts have answers, exact match.

Without ``--data`` it runs the demo: the bundled instruction-tuned demo model learns the
demo's ``sort`` questions from the ``exact_match`` rule reward alone (100 steps of 8 prompts
x 8 completions); held-out exact match (greedy, 200 questions never trained on) rises from
0.25 to 0.38.
"""
from __future__ import annotations

import warnings

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from paddlellm.api import Demo, TrainingSession
from paddlellm.errors import ConfigError

from .prompts import demo_prompts, read_prompt_jsonl
from .rl_common import (GenerationOptions, Reference, Rollouts, StepTimer, encode_all,
                        evaluate_greedy, load_run_reward, prompt_stream, sample_seed, score)
from .rl_losses import GRPOConfig
from .stage import AlignMetricsLogger

#: the demo's task: a skill with checkable answers whose held-out questions are never trained
#: on, which the instruction-tuned demo model gets right part of the time (~25% greedy)
DEMO_TASKS = ("sort",)
DEMO_DEFAULTS = {"learning_rate": 1e-4, "lr_scheduler_type": "constant", "warmup_steps": 0,
                 "max_steps": 100, "per_device_train_batch_size": 64, "max_length": 96,
                 "logging_steps": 10, "eval_steps": 50}
DEMO_OPTIONS = {"num_generations": 8, "max_completion_length": 16, "demo_train_prompts": 2000,
                "demo_eval_prompts": 200}


class RLStageConfig(GenerationOptions):
    """Options every RLHF stage has besides its loss's: the demo's data sizes."""

    demo_train_prompts: int = Field(400, gt=0, description="demo only: generated training "
                                    "questions")
    demo_eval_prompts: int = Field(100, gt=0, description="demo only: held-out questions")
    demo_tasks: list[str] | None = Field(None, description="demo only: the demo tasks asked "
                                         "(default: the stage's)")


class GRPOStageConfig(GRPOConfig, RLStageConfig):
    """Options of the ``grpo`` stage (trl's ``GRPOConfig`` names)."""

    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (a "
                                 "group); per_device_train_batch_size counts completions")
    num_iterations: int = Field(1, ge=1, description="optimizer steps on each generation "
                                "(trl's mu); --save_steps must be a multiple of it")
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo", description="loss normalisation: grpo (per sequence) | bnpo (per batch token) | "
                            "dr_grpo (B * max_completion_length) | dapo (tokens of the "
                            "generation batch)")

    @field_validator("scale_rewards", mode="before")
    @classmethod
    def _scale_rewards_flag(cls, value):
        """``--scale_rewards none`` (read as null) or a boolean, as trl accepts them."""
        if value is None or value is False:
            return "none"
        return "group" if value is True else value


def read_prompts(session: TrainingSession):
    """``--data`` (and ``--eval_data``, else the first 5% of ``--data`` held out)."""
    config = session.config
    train = read_prompt_jsonl(config.data)
    if config.eval_data:
        return train, read_prompt_jsonl(config.eval_data)
    n_eval = max(1, len(train) // 20)
    return train[n_eval:], train[:n_eval]


class RLDemo(Demo):
    """An RLHF stage without ``--data``: generated demo questions of ``tasks`` with answers,
    starting from the bundled instruction-tuned demo model (an SFT model, as RLHF needs; the
    qwen family's: for another family give ``--model_name_or_path`` of an SFT model)."""

    def __init__(self, opts: RLStageConfig, tasks, defaults) -> None:
        from paddlellm.api import INSTRUCT_DEMO_MODEL

        super().__init__(self._prompts, {"model_name_or_path": str(INSTRUCT_DEMO_MODEL),
                                         **defaults})
        self.opts, self.tasks = opts, tasks

    def _prompts(self, session: TrainingSession):
        seed = session.config.seed
        tasks = self.opts.demo_tasks or self.tasks
        return (demo_prompts(self.opts.demo_train_prompts, split="train", seed=seed,
                             tasks=tasks),
                demo_prompts(self.opts.demo_eval_prompts, split="eval", seed=seed,
                             tasks=tasks))


class RLSetup:
    """The parts an RLHF recipe builds after the session: prompts (encoded), the reward,
    the engine's rollouts and the generation options."""

    def __init__(self, session: TrainingSession, opts: Any, reward_default: str | None) -> None:
        config = session.config
        tokenizer = session.tokenizer
        self.train, self.held = session.data(read_prompts)
        if not self.train or not self.held:
            raise ConfigError(f"the {config.stage} stage needs training and held-out prompts; "
                              f"{config.data} gives {len(self.train)} and {len(self.held)}")
        prompt_room = config.max_length - opts.max_completion_length
        if prompt_room < 1:
            raise ConfigError(f"--max_length {config.max_length} leaves no room for a prompt "
                              f"before --max_completion_length {opts.max_completion_length}")
        self.train_ids, cut_train = encode_all(tokenizer, self.train, prompt_room)
        self.held_ids, cut_held = encode_all(tokenizer, self.held, prompt_room)
        self.truncated = {"train_prompts_truncated": cut_train, "eval_prompts_truncated": cut_held}
        if cut_train or cut_held:
            warnings.warn(f"{cut_train} of {len(self.train)} training and {cut_held} of "
                          f"{len(self.held)} held-out prompts are longer than --max_length "
                          f"{config.max_length} minus --max_completion_length "
                          f"{opts.max_completion_length} = {prompt_room} tokens: their start was "
                          "cut (the system prompt first); raise --max_length to keep them whole",
                          stacklevel=2)
        self.reward, self.reward_name = load_run_reward(session, reward_default)
        self.rollouts = Rollouts(session.model, tokenizer, config.max_length)
        self.timer = StepTimer(self.rollouts)

    def evaluate(self, opts) -> dict:
        return evaluate_greedy(self.rollouts, self.reward, self.held, self.held_ids, opts)


def rl_session(ctx, opts, tasks, defaults, option_defaults) -> tuple[TrainingSession, Any]:
    """The session of an RLHF stage with its demo, and the stage options (demo applied)."""
    session = TrainingSession(ctx, demo=RLDemo(opts, tasks, defaults))
    opts = session.demo_options("stage", opts, option_defaults)
    session.demo.opts = opts  # the demo's data sizes as applied
    return session, opts


def grpo_stage(ctx) -> dict[str, Any]:
    """The recipe: prompts, groups of sampled completions, group-relative advantages, the
    clipped objective; held-out greedy reward and exact match before and after."""
    import paddle

    from .rl_losses import group_advantages, grpo_loss
    from .rollout import RolloutBatch, completion_logprobs

    session, opts = rl_session(ctx, ctx.options("stage") or GRPOStageConfig(), DEMO_TASKS,
                               DEMO_DEFAULTS, DEMO_OPTIONS)
    config = session.config
    g, size, accum = opts.num_generations, config.per_device_train_batch_size, \
        config.gradient_accumulation_steps
    if size % g:
        raise ConfigError(f"--per_device_train_batch_size {size} counts completions: it must be "
                          f"a multiple of --num_generations {g}")
    if opts.num_iterations > 1 and config.save_steps % opts.num_iterations:
        raise ConfigError(f"--save_steps {config.save_steps} must be a multiple of "
                          f"--num_iterations {opts.num_iterations} (a checkpoint between the "
                          "steps on one generation could not resume exactly)")
    session.load_tokenizer()
    session.load_model()
    model = session.adapt()
    setup = RLSetup(session, opts, "exact_match" if session.is_demo else None)
    prompts_per_batch = size // g
    if len(setup.train) < prompts_per_batch:
        raise ConfigError(f"{len(setup.train)} training prompts are fewer than one batch of "
                          f"{prompts_per_batch} (per_device_train_batch_size / num_generations)")
    reference = Reference(session) if opts.beta else None
    logger = session.metrics_logger(AlignMetricsLogger, label="grpo")
    pad = session.pad_id
    state: dict[str, Any] = {"group": None, "parts": []}

    def generate(item) -> None:
        """Sample, score and prepare every micro-batch of the item's generation group."""
        ids = [i for part in item["parts"] for i in part for _ in range(g)]
        seeds = [sample_seed(config.seed, item["group"], k) for k in range(len(ids))]
        out = setup.rollouts.generate([setup.train_ids[i] for i in ids], opts, seeds=seeds)
        rewards = score(setup.reward, [setup.train[i] for i in ids], out.texts)
        total_tokens = sum(len(t) for t in out.token_ids)
        parts, start = [], 0
        for part in item["parts"]:
            n = len(part) * g
            batch = RolloutBatch.from_lists([setup.train_ids[i] for i in ids[start:start + n]],
                                            out.token_ids[start:start + n], pad)
            adv, stats = group_advantages(paddle.to_tensor(np.asarray(
                rewards[start:start + n], dtype=np.float32)), g, opts.scale_rewards)
            with paddle.no_grad():
                old = (completion_logprobs(model, batch, opts.temperature).detach()
                       if opts.num_iterations > 1 else None)
            ref = reference.logprobs(batch, opts.temperature) if reference else None
            stats["completion_length"] = float(batch.completion_mask.sum(1).mean())
            parts.append({"batch": batch, "advantages": adv, "old": old, "ref": ref,
                          "stats": stats})
            start += n
        state.update(group=item["group"], parts=parts, tokens=total_tokens / accum)

    def step_loss(model, item):
        share = setup.timer.tick() if model.training else None
        if state["group"] != item["group"]:
            generate(item)
        part = state["parts"][item["part"]]
        batch = part["batch"]
        logps = completion_logprobs(model, batch, opts.temperature)  # (B, Tc)
        loss, stats = grpo_loss(logps, part["advantages"], batch.mask(), opts,
                                old_logprobs=part["old"], ref_logprobs=part["ref"],
                                max_completion_length=opts.max_completion_length,
                                num_items_in_batch=state["tokens"])
        if model.training:
            metrics = {**part["stats"], **{k: v for k, v in stats.items()
                                           if k in ("kl", "clip_ratio/region_mean",
                                                    "clip_ratio/low_mean", "clip_ratio/high_mean")}}
            if share is not None:
                metrics["rollout_share"] = share
            logger.window.append(metrics)
        return loss, int(batch.completion_mask.sum())

    total_steps = session.total_steps(len(setup.train) / prompts_per_batch / accum
                                      * opts.num_iterations, batches_per_step=1)
    session.heading(f"GRPO: {total_steps} steps, {prompts_per_batch} prompts x {g} completions "
                    f"per micro-batch, reward {setup.reward_name}, "
                    f"{config.peft or 'all parameters'}"
                    + (f", reference: {reference.kind}" if reference else ""))
    session.log_start({"train_prompts": len(setup.train), "eval_prompts": len(setup.held),
                       **setup.truncated, "reward_source": setup.reward_name})
    stream = prompt_stream(len(setup.train), prompts_per_batch, config.seed,
                           session.strategy.shard, accum, opts.num_iterations)
    result = session.fit(stream, step_loss, total_steps=total_steps,
                         evaluate=lambda m: setup.evaluate(opts))
    return session.summary("grpo", result, **rl_fields(result, logger, opts, setup,
                                                       reference))


def rl_fields(result, logger, opts, setup: RLSetup, reference) -> dict[str, Any]:
    """Summary fields of an RLHF stage: options, reward, reference, last training metrics,
    held-out metrics before and after, the rollout share."""
    before, after = result.before, result.after
    records = [r for r in logger.records if "loss" in r]
    fields: dict[str, Any] = {
        **opts.model_dump(), "reward": setup.reward_name,
        "reference": reference.kind if reference is not None else "none",
        "train_prompts": len(setup.train), "eval_prompts": len(setup.held),
        "train_metrics_last": {k: v for k, v in records[-1].items()
                               if k not in ("time", "step")} if records else {},
        "rollout_share": setup.timer.total(),
        "eval_reward_before": before["eval_reward"], "eval_reward_after": after["eval_reward"],
    }
    if "exact_match" in before:
        fields.update(exact_match_before=before["exact_match"],
                      exact_match_after=after["exact_match"])
    if "by_task" in before:
        fields.update(by_task_before=before["by_task"], by_task_after=after["by_task"])
    fields["samples_after"] = after.get("samples", [])
    return fields


grpo_stage.config_class = GRPOStageConfig
