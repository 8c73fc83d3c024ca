"""The ``rm`` stage: train a reward model (``llm run --stage rm --data pref.jsonl``).

A :class:`~paddlellm_align.reward_model.RewardModel` (the starting checkpoint's decoder with a
fresh ``score`` head) learns the preference jsonl the ``align`` stage reads with the
Bradley–Terry loss (``--margin``, ``--center_rewards_coefficient``); held-out pair accuracy
is measured before and after, and the model is saved in the Hugging Face
sequence-classification layout (checkpoints too, so ``--resume`` continues from them).
Without ``--data`` it trains on the align demo's generated preferences (no SFT phase).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import paddle
from pydantic import Field

from paddlellm.api import ConfigError, Demo, TrainingSession, unwrap

from .demo import demo_preferences
from .reward_model import (RewardLossConfig, RewardModel, encode_preferences, pair_accuracy,
                           pad_rows, pairwise_reward_loss)

DEMO_DEFAULTS = {"learning_rate": 1e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
                 "max_steps": 60, "per_device_train_batch_size": 16, "max_length": 64,
                 "logging_steps": 5}
#: demo tasks with short answers, which the 0.8M-parameter demo model learns to judge
DEMO_TASKS = ("count", "next", "fact")


class RewardStageConfig(RewardLossConfig):
    """Options of the ``rm`` stage (the loss's, plus a margin and the demo's data sizes)."""

    margin: float = Field(0.0, description="Bradley–Terry margin: -log σ(r_c - r_r - margin)")
    demo_train_records: int = Field(400, gt=0, description="demo only: generated preferences "
                                    "to train on (those of the short-answer tasks are kept)")
    demo_eval_records: int = Field(200, gt=0, description="demo only: held-out generated "
                                   "preferences (those of the short-answer tasks are kept)")
    demo_tasks: list[str] | None = Field(None, description="demo only: generate preferences "
                                         "of these demo tasks alone (all of the records); "
                                         "default: the short-answer tasks count, next, fact")
    demo_on_policy_records: int = Field(0, ge=0, description="demo only: training questions "
                                        "whose rejected answer is the starting model's own "
                                        "greedy answer where that is wrong (on-policy pairs)")


def demo_records(session: TrainingSession):
    """The align demo's generated preferences of :data:`DEMO_TASKS`, or of ``--demo_tasks``
    (train and held-out questions never overlap, except for the shared tasks next and fact)."""
    from .data import parse_record

    opts, seed = session.ctx.options("stage") or RewardStageConfig(), session.config.seed
    tasks, answer = opts.demo_tasks, None
    if opts.demo_on_policy_records:  # the starting model's greedy answers (a fresh copy)
        from paddlellm.api import generate_answers

        starting = session.starting_model()
        answer = lambda questions: generate_answers(starting, session.tokenizer, questions,
                                                    batch_size=session.config.
                                                    per_device_eval_batch_size * 4)
    rows = lambda n, split, **kw: [
        parse_record(r, f"demo:{i + 1}", False) for i, r in
        enumerate(demo_preferences(n, split=split, seed=seed, tasks=tasks, **kw))
        if tasks is not None or r["task"] in DEMO_TASKS]
    return (rows(opts.demo_train_records, "train", answer=answer,
                 on_policy=opts.demo_on_policy_records),
            rows(opts.demo_eval_records, "eval"))


def read_records(session: TrainingSession):
    """``--data`` (and ``--eval_data``, else the first 5% of ``--data`` held out)."""
    from .stage import read_preferences

    train, _, held, _ = read_preferences(session, pointwise=False)
    return train, held


def rm_stage(ctx) -> dict:
    """The recipe: preference pairs, a reward model, the Bradley–Terry loss, pair accuracy."""
    opts = ctx.options("stage") or RewardStageConfig()
    if ctx.config.peft:
        raise ConfigError(f"the rm stage trains all parameters (--peft {ctx.config.peft} "
                          "would freeze the score head); drop --peft")
    session = TrainingSession(ctx, demo=Demo(demo_records, DEMO_DEFAULTS))
    config, tokenizer = session.config, session.load_tokenizer()
    train, held = session.data(read_records)
    train, held = (encode_preferences(tokenizer, r, config.max_length) for r in (train, held))
    if not train or not held:
        raise ConfigError(f"the rm stage needs training and held-out pairs; {config.data} "
                          f"gives {len(train)} and {len(held)} (give more, or --eval_data)")
    if session.resume_dir is not None:  # a checkpoint of this run: a reward model already
        session.model = RewardModel.from_pretrained(session.resume_dir)
    else:
        session.model = RewardModel.from_causal_lm(session.load_model(), session.pad_id,
                                                   seed=config.seed)
    model = session.model = session.strategy.wrap_model(session.model)
    size, margin = config.per_device_train_batch_size, opts.margin

    def batches():  # endless, reshuffled every epoch; shard picks this process's batches
        for epoch in itertools.count():
            order = np.random.default_rng(config.seed + epoch).permutation(len(train))
            chunks = [order[i:i + size] for i in range(0, len(order), size)]
            for i in session.strategy.shard(list(range(len(chunks)))):
                yield [train[j] for j in chunks[i]]

    def step_loss(model, pairs):
        # through the (strategy-wrapped) model itself, so data parallel syncs gradients
        ids, mask = pad_rows([c for c, _ in pairs] + [r for _, r in pairs], session.pad_id)
        rewards = model(paddle.to_tensor(ids), paddle.to_tensor(mask))  # (2P,)
        chosen, rejected = rewards[:len(pairs)], rewards[len(pairs):]
        offset = paddle.full_like(chosen, margin) if margin else None  # (P,)
        loss, _ = pairwise_reward_loss(chosen, rejected, opts, offset)
        return loss, sum(len(c) + len(r) for c, r in pairs)

    def save(directory):
        unwrap(model).save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    evaluate = lambda m: {f"eval_pair_{k}": v for k, v in pair_accuracy(
        unwrap(m), held, config.per_device_eval_batch_size).items()}
    total_steps = session.total_steps(math.ceil(len(train) / size))
    session.heading(f"RM: {total_steps} steps, {len(train)} pairs ({len(held)} held out)")
    session.log_start({"train_pairs": len(train), "eval_pairs": len(held)})
    result = session.fit(batches(), step_loss, total_steps=total_steps, evaluate=evaluate,
                         save=save)
    b, a = result.before, result.after
    return session.summary("rm", result, train_pairs=len(train), eval_pairs=len(held),
                           margin=margin, **opts.model_dump(exclude={"margin"}),
                           pair_accuracy_before=b["eval_pair_accuracy"],
                           pair_accuracy_after=a["eval_pair_accuracy"],
                           eval_pair_loss_before=b["eval_pair_loss"],
                           eval_pair_loss_after=a["eval_pair_loss"])


rm_stage.config_class = RewardStageConfig
