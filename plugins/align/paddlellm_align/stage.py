"""The ``align`` stage: preference training with the ``--align`` loss (DPO family or KTO).

``llm run --align dpo --data pref.jsonl`` trains the model (all parameters, or the adapters
of ``--peft``) with the selected loss. The reference model is a frozen copy for full-parameter
training and the same model with its adapters disabled under ``--peft`` (no second copy of
the weights); reference-free losses (simpo, orpo) have none, and ``--precompute_ref_logps``
computes the reference log-probs once before training (the copy is then dropped).
``--resume`` / ``--resume_from_checkpoint`` continue such a run from its checkpoint through
the core loop; the reference stays the starting model (reloaded for full-parameter runs).

Without ``--data`` it runs the demo: SFT of the demo model of ``--model``'s family on the demo
instructions (all parameters; ``--demo_sft_peft`` uses the PEFT method, merged afterwards),
saved to ``<output_dir>/sft-base``, then alignment (with ``--peft``, a fresh adapter whose
``base_model_name_or_path`` is that folder) on generated preferences: right answers against
the SFT model's own wrong answers or plausible wrong ones; it reports held-out preference
accuracy and exact match before and after alignment. Options the user sets (``--max_steps``,
``--learning_rate``, ...) apply to both phases; ``--demo_sft_*`` set the SFT phase alone.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from paddlellm.errors import ConfigError
from paddlellm.api import MetricsLogger, format_record as _fmt

DEMO_TRAIN_RECORDS = 2000
DEMO_EVAL_RECORDS = 200
#: alignment settings of the demo, applied to the options the user did not set
DEMO_DEFAULTS = {"learning_rate": 1e-3, "max_steps": 200, "per_device_train_batch_size": 16,
                 "per_device_eval_batch_size": 32, "warmup_steps": 10,
                 "lr_scheduler_type": "cosine", "max_length": 128, "logging_steps": 10,
                 "eval_steps": 100}
#: the demo's SFT phase, where neither the user's flags nor ``--demo_sft_*`` say otherwise
DEMO_SFT_DEFAULTS = {"zero_padding": True, "max_length": 128, "per_device_train_batch_size": 8,
                     "warmup_steps": 20, "lr_scheduler_type": "cosine", "logging_steps": 50}
#: where the demo saves its SFT model (the base of the aligned adapter)
SFT_BASE_DIR = "sft-base"
#: loss options of the demo: keep the chosen answers likely while separating them from the
#: wrong ones (DPO alone lowers both on this tiny model)
DEMO_LOSS_DEFAULTS = {"sft_loss_ratio": 1.0}
PROGRESS_KEYS = ("loss", "rewards/accuracies", "rewards/margins", "lr")


class AlignStageConfig(BaseModel):
    """Options of the ``align`` stage itself (the demo's SFT phase)."""

    model_config = ConfigDict(extra="forbid")

    demo_sft_steps: int = Field(300, ge=0, description="demo only: SFT steps before alignment "
                                "(0 skips SFT; default: --max_steps when given, else 300)")
    demo_sft_learning_rate: float | None = Field(None, gt=0, description="demo only: SFT peak "
                                                 "learning rate (default: --learning_rate when "
                                                 "given, else 2e-3, 5e-3 with --demo_sft_peft)")
    demo_sft_peft: bool = Field(False, description="demo only: SFT with the --peft method too "
                                "(merged afterwards); by default the demo's SFT trains all "
                                "parameters: LoRA SFT of the 0.8M-parameter demo model learns "
                                "the tasks too slowly")
    pair_layout: Literal["auto", "packed", "shared_prompt"] = Field(
        "auto", description="pairwise batches: packed (zero padding, block-diagonal "
        "segments), shared_prompt (each prompt encoded once, its KV reused for both "
        "responses) or auto (fewer token positions per batch)")
    demo_on_policy_records: int = Field(1000, ge=0, description="demo only: training "
                                        "questions whose wrong answer is the SFT model's own "
                                        "greedy answer where that is wrong")
    demo_train_records: int = Field(DEMO_TRAIN_RECORDS, gt=0, description="demo only: "
                                    "generated training preferences")
    demo_eval_records: int = Field(DEMO_EVAL_RECORDS, gt=0, description="demo only: held-out "
                                   "preferences (and exact-match questions)")


class AlignMetricsLogger(MetricsLogger):
    """Adds the mean of the loss's per-step metrics since the last record to every training
    record (``rewards/...``, ``logps/...``) and shows accuracy and margin in the progress bar."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.window: list[dict[str, float]] = []

    def log(self, record: dict[str, Any]) -> None:
        if "loss" in record and self.window:
            keys = self.window[0].keys()
            record = {**record, **{k: float(np.mean([m[k] for m in self.window])) for k in keys}}
            self.window.clear()
        super().log(record)
        if self._progress is not None and "loss" in record:
            self._progress.update(self._task, info=_fmt(
                {k: record[k] for k in PROGRESS_KEYS if k in record}))


# --- reference model -----------------------------------------------------------------------

class Reference:
    """Reference log-probs of packed sequences, without gradients.

    ``copy`` is the frozen copy (full-parameter training); without it the policy itself is run
    with its adapters disabled (``--peft``), so no second set of weights exists.
    """

    def __init__(self, policy, frozen_copy=None) -> None:
        self.policy, self.copy = policy, frozen_copy

    @classmethod
    def build(cls, model, peft: bool, original=None) -> "Reference":
        """``original``: the starting weights when the policy no longer holds them (a
        full-parameter run resumed from a checkpoint); by default a copy of ``model``."""
        from paddlellm.api import unwrap

        if peft:
            return cls(model)
        # the model inside a strategy wrapper
        frozen = original if original is not None else copy.deepcopy(unwrap(model))
        frozen.eval()
        for p in frozen.parameters():
            p.stop_gradient = True
        return cls(model, frozen)

    def __call__(self, packed: dict[str, Any]):
        import paddle

        from paddlellm.api import disable_adapters

        from .logps import sequence_logps

        with paddle.no_grad():
            if self.copy is not None:
                return sequence_logps(self.copy, packed)[0].detach()
            with disable_adapters(self.policy):
                return sequence_logps(self.policy, packed)[0].detach()

    def release_copy(self) -> None:
        self.copy = None


# --- data ----------------------------------------------------------------------------------

def _records(config, pointwise: bool, stage_opts: AlignStageConfig, answer=None):
    """(train records, held-out pairs for KTO's preference accuracy, eval records,
    exact-match pairs or None)."""
    from .data import parse_record, read_preference_jsonl

    if config.data is None:
        from .demo import demo_preferences

        rows = demo_preferences(stage_opts.demo_train_records, split="train", seed=config.seed,
                                pointwise=pointwise, answer=answer,
                                on_policy=stage_opts.demo_on_policy_records)
        held = demo_preferences(stage_opts.demo_eval_records, split="eval", seed=config.seed)
        as_rec = lambda rs, pw: [parse_record(r, f"demo:{i + 1}", pw) for i, r in enumerate(rs)]
        em_pairs = [{"src": r["src"][0], "tgt": r["answer"], "task": r["task"]} for r in held]
        held_eval = (demo_preferences(stage_opts.demo_eval_records, split="eval",
                                      seed=config.seed, pointwise=True) if pointwise else held)
        return as_rec(rows, pointwise), as_rec(held, False), as_rec(held_eval, pointwise), em_pairs
    train = read_preference_jsonl(config.data, pointwise)
    if config.eval_data:
        held = read_preference_jsonl(config.eval_data, pointwise)
    else:
        n_eval = max(1, len(train) // 20)
        train, held = train[n_eval:], train[:n_eval]
    return train, (None if pointwise else held), held, None


def _assign_kl_partners(examples, seed: int) -> None:
    """KTO's mismatched pairs, fixed per dataset (so precomputed reference values match):
    example ``order[k]`` gets the completion of ``order[k-1]``."""
    order = np.random.default_rng(seed).permutation(len(examples))
    for k, idx in enumerate(order):
        examples[idx].kl_completion = examples[order[k - 1]].chosen


def make_batch(examples, pointwise: bool, capacity: int, pad_id: int,
               layout: str = "packed") -> dict:
    from .data import pair_batch, pointwise_batch

    if pointwise:
        return pointwise_batch(examples, capacity, pad_id)
    return pair_batch(examples, capacity, pad_id, layout)


def batch_stream(examples, config, pointwise: bool, pad_id: int, shard, layout: str):
    """Endless packed batches of ``per_device_train_batch_size`` pairs/examples, reshuffled
    every epoch; ``shard`` picks this rank's batches."""
    size, capacity, epoch = config.per_device_train_batch_size, 2 * config.max_length, 0
    while True:
        order = np.random.default_rng(config.seed + epoch).permutation(len(examples))
        chunks = [order[i:i + size] for i in range(0, len(order), size)]
        for i in shard(list(range(len(chunks)))):
            yield make_batch([examples[j] for j in chunks[i]], pointwise, capacity, pad_id,
                             layout)
        epoch += 1


def precompute_reference(reference: Reference, examples, pointwise: bool, capacity: int,
                         pad_id: int, batch_size: int, layout: str) -> None:
    """Fill every example's reference log-probs (KTO: also of its KL pair) once."""
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        batch = make_batch(chunk, pointwise, capacity, pad_id, layout)
        logps = reference(batch).numpy()
        if pointwise:
            kl = reference(batch["kl"]).numpy()
            for e, a, b in zip(chunk, logps, kl):
                e.ref_chosen, e.ref_rejected = float(a), float(b)
        else:
            for e, a, b in zip(chunk, logps[0::2], logps[1::2]):
                e.ref_chosen, e.ref_rejected = float(a), float(b)


# --- losses on batches ---------------------------------------------------------------------

class PreferenceStepLoss:
    """``step_loss(model, batch) -> (loss, response tokens)`` for the core training loop.

    Runs the policy on the packed batch, takes reference values (precomputed or from
    ``reference``), applies the loss plugin; the loss's metrics are kept in ``last_metrics``
    and, in training mode, handed to ``on_metrics`` (the logger's window)."""

    def __init__(self, loss_fn, options, reference: Reference | None, pointwise: bool,
                 on_metrics: Callable[[dict], None] | None = None) -> None:
        self.loss_fn, self.options, self.reference = loss_fn, options, reference
        self.pointwise, self.on_metrics = pointwise, on_metrics
        self.last_metrics: dict[str, float] = {}
        self.last_policy: dict[str, Any] = {}

    def __call__(self, model, batch):
        from .logps import pair_logps, point_logps, reference_values

        policy = (point_logps if self.pointwise else pair_logps)(model, batch)
        self.last_policy = policy
        ref = (reference_values(self.reference, batch, self.pointwise)
               if self.reference is not None else {})
        loss, self.last_metrics = self.loss_fn({**policy, **ref}, self.options)
        if self.on_metrics is not None and model.training:
            self.on_metrics(self.last_metrics)
        return loss, int(batch["lengths"].sum())


def preference_accuracy(model, batches: Sequence[dict]) -> float:
    """Fraction of held-out pairs whose chosen response the model itself finds more likely
    (summed log-probs), reference-free, so it is comparable before and after training."""
    import paddle

    from .logps import pair_logps

    was_training = model.training
    model.eval()
    hits = total = 0
    with paddle.no_grad():
        for batch in batches:
            v = pair_logps(model, batch)
            hits += int((v["chosen_logps"] > v["rejected_logps"]).astype("int64").sum())
            total += batch["num_pairs"]
    if was_training:
        model.train()
    return hits / max(total, 1)


def evaluate_preferences(model, step_loss, batches: Sequence[dict], pair_batches) -> dict:
    """Held-out loss and loss metrics (pair/example-weighted means) plus preference accuracy
    (from the same forward for pairwise losses; from ``pair_batches`` for KTO)."""
    import paddle

    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = hits = 0
    with paddle.no_grad():
        for batch in batches:
            n = len(batch["lengths"]) // (1 if step_loss.pointwise else 2)
            loss, _ = step_loss(model, batch)
            metrics = {"loss": float(loss), **step_loss.last_metrics}
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
            if not step_loss.pointwise:
                p = step_loss.last_policy
                hits += int((p["chosen_logps"] > p["rejected_logps"]).astype("int64").sum())
    if was_training:
        model.train()
    out = {f"eval_{k}": v / max(count, 1) for k, v in sums.items()}
    if not step_loss.pointwise:
        out["eval_pref_accuracy"] = hits / max(count, 1)
    elif pair_batches:
        out["eval_pref_accuracy"] = preference_accuracy(model, pair_batches)
    return out


# --- the stage -----------------------------------------------------------------------------

def _apply_demo_defaults(config):
    unset = {k: v for k, v in DEMO_DEFAULTS.items() if k not in config.model_fields_set}
    return config.model_copy(update=unset), unset


def demo_sft_config(user, config, stage_opts: AlignStageConfig):
    """The SFT phase's configuration: ``--demo_sft_*`` first, then what the user set
    (``user``: the run's config as given), then :data:`DEMO_SFT_DEFAULTS`."""
    given = user.model_fields_set
    opts_given = stage_opts.model_fields_set
    use_peft = bool(config.peft and stage_opts.demo_sft_peft)
    steps = (stage_opts.demo_sft_steps if "demo_sft_steps" in opts_given or
             "max_steps" not in given or user.max_steps <= 0 else user.max_steps)
    lr = (stage_opts.demo_sft_learning_rate if stage_opts.demo_sft_learning_rate else
          user.learning_rate if "learning_rate" in given else 5e-3 if use_peft else 2e-3)
    update = {k: v for k, v in DEMO_SFT_DEFAULTS.items() if k not in given}
    update.update({"learning_rate": lr, "max_steps": steps, "eval_steps": None,
                   "save_steps": steps + 1, "stage": "sft", "align": None,
                   "peft": config.peft if use_peft else None,
                   "output_dir": str(Path(config.output_dir) / SFT_BASE_DIR)})
    return config.model_copy(update=update)


def demo_sft(model, tokenizer, ctx, sft_config, pad_id: int):
    """The demo's SFT phase on the demo instructions (LoRA under ``--demo_sft_peft``, merged
    after); the model is saved to ``sft_config.output_dir`` and names it as its origin."""
    import json

    from paddlellm.api import dump_config
    from paddlellm.api import demo_examples
    from paddlellm.api import record_to_messages, tokenize_all
    from paddlellm.api import DEMO_TRAIN_EXAMPLES, epoch_stream
    from paddlellm.api import save_model
    from paddlellm.api import apply_peft, merge_adapter
    from paddlellm.api import train
    from paddlellm.api import batch_loss
    from paddlellm.api import print_heading
    from paddlellm.api import build_optimizer

    steps, use_peft = sft_config.max_steps, bool(sft_config.peft)
    main = ctx.strategy.is_main_process
    print_heading(f"SFT (demo phase 1 of 2: {steps} steps on the generated instructions, "
                  f"{sft_config.peft + ' merged after' if use_peft else 'all parameters'})",
                  enabled=main)
    rows = demo_examples(DEMO_TRAIN_EXAMPLES, split="train", seed=sft_config.seed)
    examples, _ = tokenize_all(tokenizer, [record_to_messages(r, "demo") for r in rows],
                               sft_config.max_length)
    if use_peft:
        model = apply_peft(model, sft_config.peft, ctx.options("peft_method"))
    optimizer, scheduler = build_optimizer(model, sft_config, steps)
    logger = MetricsLogger(Path(ctx.config.output_dir) / "sft_metrics.jsonl", enabled=main,
                           label="sft")
    state = train(model, optimizer, scheduler,
                  epoch_stream(examples, sft_config, pad_id, ctx.strategy.shard), batch_loss,
                  config=sft_config, ctx=ctx, total_steps=steps, logger=logger)
    if use_peft:
        model = merge_adapter(model)
    base = Path(sft_config.output_dir).resolve()
    if main:  # the aligned adapter's base, loadable on its own
        save_model(model, tokenizer, str(base))
        (base / "run_config.json").write_text(json.dumps(dump_config(sft_config), indent=2))
    ctx.strategy.barrier()
    model.name_or_path = str(base)
    return model, {"steps": steps, "learning_rate": sft_config.learning_rate,
                   "peft": sft_config.peft, "saved_to": str(base),
                   "loss_first": state.losses[0], "loss_last": state.losses[-1]}


def align_stage(ctx) -> dict[str, Any]:
    import paddle

    from paddlellm.api import AutoModelForCausalLM
    from paddlellm.api import exact_match, generate_answers
    from paddlellm.api import prepare_for_training, resolve_run_model
    from paddlellm.api import print_heading
    from paddlellm.api import save_model_or_adapter, setup_run_peft, trainable_parameter_report
    from paddlellm.api import run_weights_source
    from paddlellm.api import AutoTokenizer
    from paddlellm.api import resume_checkpoint
    from paddlellm.api import train_and_evaluate
    from paddlellm.api import build_optimizer

    from .data import tokenize_records

    config, strategy = ctx.config, ctx.strategy
    if not config.align:
        raise ConfigError("the align stage needs an alignment loss: --align dpo|simpo|orpo|"
                          "ipo|hinge|kto (see `llm plugins`)")
    loss_fn = ctx.registry.load("alignment_loss", config.align)
    options = loss_fn.resolve(ctx.options("alignment_loss"), config.align)
    stage_opts = ctx.options("stage") or AlignStageConfig()
    pointwise = getattr(loss_fn, "kind", "pairwise") == "pointwise"
    is_demo = config.data is None
    if is_demo and (config.resume or config.resume_from_checkpoint):
        raise ConfigError("the align demo (no --data) does not resume: its SFT phase and "
                          "generated preferences are not checkpointed; rerun it, or resume a "
                          "run with --data")
    demo_defaults: dict = {}
    sft_config = None
    if is_demo:
        config, demo_defaults = _apply_demo_defaults(config)
        unset = {k: v for k, v in DEMO_LOSS_DEFAULTS.items()
                 if k in type(options).model_fields and k not in options.model_fields_set}
        options = options.model_copy(update=unset)
        demo_defaults.update(unset)
        if stage_opts.demo_sft_steps:  # --demo_sft_steps 0 skips the SFT phase
            sft_config = demo_sft_config(ctx.config, config, stage_opts)
        used = {**config.plugin_options, "alignment_loss": options}
        if sft_config is not None:  # record the SFT phase's resolved steps and learning rate
            used["stage"] = stage_opts.model_copy(update={
                "demo_sft_steps": sft_config.max_steps,
                "demo_sft_learning_rate": sft_config.learning_rate})
        ctx.use_config(config.model_copy(update={"plugin_options": used}))
    source = resolve_run_model(ctx)  # the starting weights: --model_name_or_path or demo
    paddle.seed(config.seed)
    resume_dir = resume_checkpoint(config)
    tokenizer = AutoTokenizer.from_pretrained(str(config.tokenizer_name_or_path or resume_dir
                                                  or source))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    # resumed: the checkpoint's weights (--peft: the base; the adapter is loaded below)
    weights = run_weights_source(config, resume_dir, source)
    model = prepare_for_training(AutoModelForCausalLM.from_pretrained(weights), config)
    summary: dict[str, Any] = {"stage": "align", "align": config.align, "demo": is_demo,
                               "demo_defaults": demo_defaults, "model": source,
                               **options.model_dump()}
    if sft_config is not None:
        model, summary["sft"] = demo_sft(model, tokenizer, ctx, sft_config, pad_id)

    answer = lambda questions: generate_answers(model, tokenizer, questions,
                                                batch_size=config.per_device_eval_batch_size * 4)
    train_rec, eval_pair_rec, eval_rec, em_pairs = _records(config, pointwise, stage_opts, answer)
    train_ex = tokenize_records(tokenizer, train_rec, config.max_length)
    eval_ex = tokenize_records(tokenizer, eval_rec, config.max_length)
    eval_pairs = (tokenize_records(tokenizer, eval_pair_rec, config.max_length)
                  if eval_pair_rec and pointwise else [])
    if pointwise:
        _assign_kl_partners(train_ex, config.seed)
        _assign_kl_partners(eval_ex, config.seed + 1)

    model = strategy.wrap_model(setup_run_peft(model, config, ctx.options("peft_method"),
                                               resume_dir))
    # a shared prompt runs forward_hidden twice, which a multi-process wrapper does not see
    layout = stage_opts.pair_layout if strategy.world_size == 1 else "packed"
    reference = None
    if loss_fn.needs_reference_for(options):
        # a resumed full-parameter run holds the checkpoint's weights: the reference is the
        # run's starting model, loaded again (precomputed values are recomputed from it)
        original = (prepare_for_training(AutoModelForCausalLM.from_pretrained(source), config)
                    if resume_dir is not None and not config.peft else None)
        reference = Reference.build(model, peft=bool(config.peft), original=original)
        if options.precompute_ref_logps:
            for exs in (train_ex, eval_ex):
                precompute_reference(reference, exs, pointwise, 2 * config.max_length, pad_id,
                                     config.per_device_eval_batch_size, layout)
            reference.release_copy()  # the frozen copy is no longer needed
    capacity = 2 * config.max_length
    size = config.per_device_eval_batch_size
    eval_batches = [make_batch(eval_ex[i:i + size], pointwise, capacity, pad_id, layout)
                    for i in range(0, len(eval_ex), size)]
    pair_batches = [make_batch(eval_pairs[i:i + size], False, capacity, pad_id, layout)
                    for i in range(0, len(eval_pairs), size)]
    logger = AlignMetricsLogger(ctx.output_dir / "metrics.jsonl", enabled=strategy.is_main_process,
                                label=config.align)
    step_loss = PreferenceStepLoss(loss_fn, options, reference, pointwise,
                                   on_metrics=logger.window.append)

    def evaluate(m) -> dict:
        return evaluate_preferences(m, step_loss, eval_batches, pair_batches)

    def em() -> dict:
        if not em_pairs:
            return {}
        return exact_match(model, tokenizer, em_pairs,
                           batch_size=config.per_device_eval_batch_size * 4)

    per_step = config.gradient_accumulation_steps * strategy.world_size
    batches_per_epoch = math.ceil(len(train_ex) / config.per_device_train_batch_size)
    total_steps = (config.max_steps if config.max_steps > 0 else
                   max(1, math.ceil(config.num_train_epochs * batches_per_epoch / per_step)))
    optimizer, scheduler = build_optimizer(model, config, total_steps)
    optimizer = strategy.wrap_optimizer(optimizer)
    reference_kind = ("none" if reference is None else "precomputed"
                      if options.precompute_ref_logps else "adapters disabled"
                      if config.peft else "frozen copy")
    phase = " (demo phase 2 of 2)" if sft_config is not None else ""
    print_heading(f"{config.align.upper()}{phase}: {total_steps} steps, "
                  f"{config.peft or 'all parameters'}, reference: {reference_kind}",
                  enabled=strategy.is_main_process)
    if resume_dir is None:
        logger.log({"step": 0, "train_examples": len(train_ex), "eval_examples": len(eval_ex),
                    "reference": reference_kind})
    state, before, after = train_and_evaluate(
        model, optimizer, scheduler,
        batch_stream(train_ex, config, pointwise, pad_id, strategy.shard, layout), step_loss,
        config=config, ctx=ctx, total_steps=total_steps, logger=logger, evaluate=evaluate,
        extra_metrics=em, save=lambda d: save_model_or_adapter(model, tokenizer, d),
        resume_from=str(resume_dir) if resume_dir else None)  # before: step 0 of an interrupted run
    trainable, total, _ = trainable_parameter_report(model)
    train_records = [r for r in logger.records if "loss" in r]
    summary.update({
        "peft": config.peft, "trainable_params": trainable, "total_params": total,
        "reference": reference_kind, "steps": state.step,
        "resumed_from": str(resume_dir) if resume_dir else None,
        "train_examples": len(train_ex), "train_loss_first": state.losses[0],
        "train_loss_last": state.losses[-1],
        "train_metrics_last": {k: v for k, v in train_records[-1].items()
                               if k not in ("time", "step")} if train_records else {},
        "eval_before": {k: v for k, v in before.items() if k != "samples"},
        "eval_after": {k: v for k, v in after.items() if k != "samples"},
        "output_dir": str(ctx.output_dir),
    })
    for key in ("eval_pref_accuracy", "exact_match", "eval_loss"):
        if key in before:
            summary[f"{key}_before"], summary[f"{key}_after"] = before[key], after[key]
    if em_pairs:
        summary["samples_after"] = after["samples"]
    return summary


align_stage.config_class = AlignStageConfig
