"""The ``ppo`` stage: Proximal Policy Optimization with a value head (``llm run --align ppo``).

trl's ``PPOTrainer`` shape and option names. The policy carries a value head (a scalar
linear head on its final hidden states, trained with it: the older
``AutoModelForCausalLMWithValueHead``), saved beside the policy as ``value_head.safetensors``
so a resumed run restores it. Each rollout batch is ``per_device_train_batch_size x
gradient_accumulation_steps x num_mini_batches`` prompts with one completion each, sampled
through the engine with the policy's live weights (:class:`~paddlellm_align.rl_common.
Rollouts`) and scored by ``--reward`` (less ``--missing_eos_penalty`` for a completion that
never ended); the per-token log-probs, the reference's (the model with its adapters
disabled under ``--peft``, else a frozen copy) and the values give the KL-penalised rewards,
GAE advantages and returns (:func:`~paddlellm_align.rl_losses.ppo_advantages`); then
``num_ppo_epochs`` passes of ``num_mini_batches`` optimizer steps minimise the clipped policy
and value losses (:func:`~paddlellm_align.rl_losses.ppo_loss`), the rollout's rows reshuffled
in every pass (:func:`epoch_order`, seeded, so ``--resume`` cuts the same mini-batches).

Logged per step (means since the previous record): ``reward`` (the scores), ``kl``,
``non_score_reward``, ``policy_loss``, ``value_loss``, ``clipfrac``, ``value_clipfrac``,
``approxkl``, ``completion_length`` and ``rollout_share``. Held-out: the greedy completions'
mean reward and, where prompts have answers, exact match.

Without ``--data`` it runs the demo: the bundled instruction-tuned demo model on the demo's
``sort`` questions with the ``exact_match`` rule reward (as the ``grpo`` demo): 24 steps,
rollout batches of 64 prompts, two PPO epochs each, learning rate 3e-4; held-out exact match
(greedy, 200 questions never trained on) rises from 0.25 to 0.33. With ``--reward
reward_model`` and no ``--reward_model_path`` the demo first trains the reward model
(:func:`demo_reward_model`: the ``rm`` stage on on-policy sort preferences) and PPO raises
its held-out score (-0.72 to 1.23) while exact match falls (0.25 to 0.195): the reward
model, 0.63 accurate on held-out pairs, is a weak proxy of correctness.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from paddlellm.api import CheckpointFormatError, TrainingSession
from paddlellm.errors import ConfigError

from .grpo_stage import RLSetup, RLStageConfig, rl_fields, rl_session
from .rl_common import Reference, prompt_stream, sample_seed, score
from .rl_losses import PPOConfig
from .stage import AlignMetricsLogger

VALUE_HEAD_FILE = "value_head.safetensors"
DEMO_TASKS = ("sort",)
DEMO_DEFAULTS = {"learning_rate": 3e-4, "lr_scheduler_type": "constant", "warmup_steps": 0,
                 "max_steps": 24, "per_device_train_batch_size": 64, "max_length": 96,
                 "logging_steps": 4, "eval_steps": 12}
DEMO_OPTIONS = {"max_completion_length": 16, "num_ppo_epochs": 2, "demo_train_prompts": 2000,
                "demo_eval_prompts": 200}
#: the demo with ``--reward reward_model``: PPO settings on top of :data:`DEMO_OPTIONS`
DEMO_RM_OPTIONS = {"kl_coef": 0.2}
#: where the demo saves the reward model it trains (``--reward reward_model`` without a path)
REWARD_MODEL_DIR = "reward-model"


class PPOStageConfig(PPOConfig, RLStageConfig):
    """Options of the ``ppo`` stage (trl's ``PPOConfig`` names)."""

    num_ppo_epochs: int = Field(4, ge=1, description="passes over each rollout batch")
    num_mini_batches: int = Field(1, ge=1, description="optimizer steps per pass; the rollout "
                                  "batch is per_device_train_batch_size x "
                                  "gradient_accumulation_steps x num_mini_batches prompts")
    response_length: int | None = Field(None, ge=1, description="trl's name of "
                                        "--max_completion_length (sets it)")
    missing_eos_penalty: float | None = Field(None, ge=0, description="subtracted from the "
                                              "score of a completion without an end-of-"
                                              "sequence token")
    demo_rm_steps: int = Field(60, gt=0, description="demo with --reward reward_model and "
                               "no --reward_model_path: steps of the reward-model phase")
    demo_rm_on_policy_records: int = Field(400, ge=0, description="demo reward-model phase: "
                                           "training pairs whose rejected answer is the "
                                           "starting model's own greedy answer where wrong")

    @model_validator(mode="after")
    def _response_length(self):
        if self.response_length is not None:
            self.max_completion_length = self.response_length
        return self


def value_head_layer(policy: Any, seed: int):
    """``Linear(hidden_size, 1)`` with a seeded ``N(0, initializer_range^2)`` weight, zero bias."""
    import paddle

    from paddlellm.api import unwrap

    config = unwrap(policy).config
    head = paddle.nn.Linear(config.hidden_size, 1)
    std = getattr(config, "initializer_range", 0.02)
    weight = np.random.default_rng(seed).normal(0.0, std, size=head.weight.shape)
    head.weight.set_value(paddle.to_tensor(weight.astype("float32")))
    head.bias.set_value(paddle.zeros([1], dtype="float32"))
    return head


def policy_with_value_head(policy: Any, head: Any):
    """One layer holding the policy and its value head, so the optimizer, checkpoints and
    resume cover both (structural names ``policy.*`` and ``v_head.*``)."""
    import paddle

    class _PolicyWithValueHead(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.policy, self.v_head = policy, head

        def forward(self, batch, temperature: float):
            """``(B, Tc)`` completion log-probs and values from one forward of the policy."""
            import paddle.nn.functional as F

            ids, mask = batch.model_inputs()
            tp, tc = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
            hidden = self.policy.forward_hidden(ids, mask)[:, tp - 1: tp - 1 + tc]
            values = self.v_head(hidden.astype("float32")).squeeze(-1)
            logits = self.policy.logits(hidden)
            if temperature != 1.0:
                logits = logits / temperature
            b, t, v = logits.shape
            targets = paddle.to_tensor(batch.completion_ids)
            logps = -F.cross_entropy(logits.reshape([b * t, v]).astype("float32"),
                                     targets.reshape([b * t, 1]),
                                     reduction="none").reshape([b, t])
            return logps, values

    return _PolicyWithValueHead()


def save_value_head(head: Any, directory: str | Path) -> None:
    from safetensors.numpy import save_file

    save_file({"weight": head.weight.numpy(), "bias": head.bias.numpy()},
              str(Path(directory) / VALUE_HEAD_FILE))


def load_value_head(head: Any, directory: str | Path) -> None:
    import paddle
    from safetensors.numpy import load_file

    path = Path(directory) / VALUE_HEAD_FILE
    if not path.is_file():
        raise CheckpointFormatError(f"{path}: missing (a ppo checkpoint holds the value head "
                                    "beside the policy)")
    tensors = load_file(str(path))
    for name in ("weight", "bias"):
        param = getattr(head, name)
        value = tensors.get(name)
        if value is None or tuple(value.shape) != tuple(param.shape):
            raise CheckpointFormatError(f"{path}: '{name}' should have shape "
                                        f"{tuple(param.shape)}, got "
                                        f"{None if value is None else tuple(value.shape)}")
        param.set_value(paddle.to_tensor(value.astype("float32")))


def epoch_order(seed: int, rollout: int, epoch: int, count: int) -> np.ndarray:
    """The order of a rollout batch's ``count`` rows in one PPO epoch: a permutation seeded
    by ``(seed, rollout, epoch)``, so a resumed run cuts the same mini-batches."""
    return np.random.default_rng([seed, rollout, epoch]).permutation(count)


def demo_reward_model(session: TrainingSession, opts: PPOStageConfig) -> str:
    """The demo's reward model (``--reward reward_model`` without ``--reward_model_path``):
    the ``rm`` stage's recipe run on the align demo's generated preferences of the PPO demo's
    tasks (``--demo_tasks``), from the run's starting model, with on-policy pairs (the
    starting model's own wrong greedy answers rejected), ``--demo_rm_steps`` steps at the rm
    demo's settings; saved to ``<output_dir>/reward-model`` (a resumed run reuses it).
    Records the path as the reward's ``reward_model_path`` and returns it."""
    import dataclasses
    import json

    from .rm_stage import DEMO_DEFAULTS as RM_DEFAULTS
    from .rm_stage import RewardStageConfig, rm_stage

    config = session.config
    out = (session.output_dir / REWARD_MODEL_DIR).resolve()
    reward_options = config.plugin_options["reward"].model_copy(
        update={"reward_model_path": str(out)})
    if session.resume_dir is not None:
        if not (out / "config.json").is_file():
            raise ConfigError(f"--resume: {out} holds no reward model (the demo's reward-model "
                              "phase saves it there); rerun without --resume")
        session.facts["reward_model"] = {"saved_to": str(out), "reused": True}
        session.record_options("reward", reward_options)
        return str(out)
    steps, tasks = opts.demo_rm_steps, list(opts.demo_tasks or DEMO_TASKS)
    rm_opts = RewardStageConfig(demo_tasks=tasks,
                                demo_on_policy_records=opts.demo_rm_on_policy_records)
    rm_config = config.model_copy(update={
        **RM_DEFAULTS, "max_steps": steps, "stage": "rm", "align": None, "peft": None,
        "reward": None, "data": None, "eval_data": None, "resume": False,
        "resume_from_checkpoint": None, "model_name_or_path": str(session.source),
        "output_dir": str(out), "eval_steps": None, "save_steps": steps + 1,
        "plugin_options": {"stage": rm_opts}})
    session.heading(f"reward model (demo phase 1 of 2: {steps} steps on generated "
                    f"preferences of {', '.join(tasks)})")
    summary = rm_stage(dataclasses.replace(session.ctx, config=rm_config, used_config=None))
    if session.is_main_process:
        (out / "run_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    session.facts["reward_model"] = {
        "saved_to": str(out), "steps": steps, "tasks": tasks,
        "train_pairs": summary["train_pairs"], "eval_pairs": summary["eval_pairs"],
        "on_policy_records": opts.demo_rm_on_policy_records,
        "pair_accuracy_before": summary["pair_accuracy_before"],
        "pair_accuracy_after": summary["pair_accuracy_after"]}
    session.record_options("reward", reward_options)
    session.heading("PPO (demo phase 2 of 2)")
    return str(out)


def ppo_stage(ctx) -> dict[str, Any]:
    """The recipe: rollouts, values and reference log-probs, KL-penalised GAE, then
    ``num_ppo_epochs x num_mini_batches`` clipped policy + value steps per rollout batch."""
    import paddle

    from .rl_losses import ppo_advantages, ppo_loss
    from .rollout import RolloutBatch

    with_rm = ctx.config.reward == "reward_model"
    session, opts = rl_session(ctx, ctx.options("stage") or PPOStageConfig(), DEMO_TASKS,
                               DEMO_DEFAULTS,
                               {**DEMO_OPTIONS, **DEMO_RM_OPTIONS} if with_rm else DEMO_OPTIONS)
    config = session.config
    size, accum = config.per_device_train_batch_size, config.gradient_accumulation_steps
    steps_per_rollout = opts.num_mini_batches * opts.num_ppo_epochs
    if steps_per_rollout > 1 and config.save_steps % steps_per_rollout:
        raise ConfigError(f"--save_steps {config.save_steps} must be a multiple of "
                          f"--num_mini_batches x --num_ppo_epochs = {steps_per_rollout} (a "
                          "checkpoint inside one rollout batch's steps could not resume "
                          "exactly)")
    if session.strategy.world_size > 1:
        raise ConfigError("the ppo stage runs on one process (its value head is not under the "
                          "data-parallel wrapper); launch it without --nproc_per_node")
    if session.is_demo and with_rm and not config.plugin_options["reward"].reward_model_path:
        demo_reward_model(session, opts)
        config = session.config
    tokenizer = session.load_tokenizer()
    session.load_model()
    policy = session.adapt()
    setup = RLSetup(session, opts, "exact_match" if session.is_demo else None)
    rollout_prompts = size * accum * opts.num_mini_batches
    if len(setup.train) < size:
        raise ConfigError(f"{len(setup.train)} training prompts are fewer than one batch of "
                          f"{size} (--per_device_train_batch_size)")
    reference = Reference(session)
    head = value_head_layer(policy, config.seed)
    if session.resume_dir is not None:
        load_value_head(head, session.resume_dir)
    model = policy_with_value_head(policy, head)
    logger = session.metrics_logger(AlignMetricsLogger, label="ppo")
    pad, eos = session.pad_id, getattr(tokenizer, "eos_token_id", None)
    parts_per_group = accum * opts.num_mini_batches
    state: dict[str, Any] = {"group": None, "epoch": None, "parts": []}

    def generate(item) -> None:
        """Sample and score the rollout batch; values, log-probs, advantages, returns."""
        ids = [i for part in item["parts"] for i in part]
        seeds = [sample_seed(config.seed, item["group"], k) for k in range(len(ids))]
        out = setup.rollouts.generate([setup.train_ids[i] for i in ids], opts, seeds=seeds)
        scores = np.asarray(score(setup.reward, [setup.train[i] for i in ids], out.texts),
                            dtype=np.float32)
        raw = float(scores.mean())
        if opts.missing_eos_penalty is not None and eos is not None:
            ended = np.asarray([bool(t) and t[-1] == eos for t in out.token_ids])
            scores = scores - opts.missing_eos_penalty * (~ended).astype(np.float32)
        batch = RolloutBatch.from_lists([setup.train_ids[i] for i in ids], out.token_ids, pad)
        mask = batch.mask()
        with paddle.no_grad():
            logps, values = model(batch, opts.temperature)
        ref = reference.logprobs(batch, opts.temperature)
        adv = ppo_advantages(logps.detach(), ref, values.detach(), paddle.to_tensor(scores),
                             mask, opts)
        state.update(group=item["group"], batch=batch, epoch=None, rollout={
            "old": logps.detach(), "old_values": adv.values, "advantages": adv.advantages,
            "returns": adv.returns}, stats={
            "reward": raw, "kl": adv.stats["objective/kl"],
            "non_score_reward": adv.stats["objective/non_score_reward"],
            "completion_length": float(batch.completion_mask.sum(1).mean())})

    def shuffle(item) -> None:
        """This PPO epoch's micro-batches: the rollout's rows in a permutation seeded by
        (--seed, rollout batch, epoch), cut in order (trl reshuffles per epoch too)."""
        batch, count = state["batch"], len(state["batch"].prompt_ids)
        order = epoch_order(config.seed, item["group"], item["iteration"], count)
        width = count // parts_per_group
        parts = []
        for j in range(parts_per_group):
            rows = order[j * width:(j + 1) * width]
            index = paddle.to_tensor(rows)
            sub = RolloutBatch(batch.prompt_ids[rows], batch.prompt_mask[rows],
                               batch.completion_ids[rows], batch.completion_mask[rows])
            parts.append({"batch": sub, **{k: paddle.gather(v, index, axis=0)
                                           for k, v in state["rollout"].items()}})
        state.update(epoch=item["iteration"], parts=parts)

    def step_loss(model, item):
        share = setup.timer.tick() if model.training else None
        if state["group"] != item["group"]:
            generate(item)
        if state["epoch"] != item["iteration"]:
            shuffle(item)
        part = state["parts"][item["part"]]
        batch = part["batch"]
        logps, values = model(batch, opts.temperature)
        loss, stats = ppo_loss(logps, part["old"], part["advantages"], part["returns"], values,
                               part["old_values"], batch.mask(), opts)
        if model.training:
            logger.window.append({
                **state["stats"], "policy_loss": stats["loss/policy"],
                "value_loss": stats["loss/value"], "clipfrac": stats["policy/clipfrac"],
                "value_clipfrac": stats["val/clipfrac"],
                "approxkl": stats["policy/approxkl"],
                "rollout_share": share if share is not None else 0.0})
        return loss, int(batch.completion_mask.sum())

    def save(directory):
        session.model = policy  # the policy's own files (or adapter), then the value head
        try:
            session.save_files(directory)
        finally:
            session.model = model
        save_value_head(head, directory)

    total_steps = session.total_steps(len(setup.train) / rollout_prompts * steps_per_rollout,
                                      batches_per_step=1)
    session.heading(f"PPO: {total_steps} steps, rollout batches of {rollout_prompts} prompts "
                    f"({opts.num_ppo_epochs} epochs x {opts.num_mini_batches} mini-batches), "
                    f"reward {setup.reward_name}, {config.peft or 'all parameters'}, "
                    f"reference: {reference.kind}")
    session.log_start({"train_prompts": len(setup.train), "eval_prompts": len(setup.held),
                       **setup.truncated, "reward_source": setup.reward_name})
    stream = prompt_stream(len(setup.train), size, config.seed, session.strategy.shard,
                           parts_per_group, opts.num_ppo_epochs)
    session.model = model
    result = session.fit(stream, step_loss, total_steps=total_steps,
                         evaluate=lambda m: setup.evaluate(opts), save=save)
    session.model = policy
    return session.summary("ppo", result, **rl_fields(result, logger, opts, setup,
                                                      reference))


ppo_stage.config_class = PPOStageConfig
