"""The ``align`` stage: preference training with the ``--align`` loss (DPO family or KTO).

``llm run --align dpo --data pref.jsonl`` trains the model (all parameters, or the adapters
of ``--peft``) with the selected loss. The reference model is a frozen copy for full-parameter
training and the same model with its adapters disabled under ``--peft`` (no second copy of
the weights); reference-free losses (simpo, orpo) have none, and ``--precompute_ref_logps``
computes the reference log-probs once before training (the copy is then dropped).
``--resume`` / ``--resume_from_checkpoint`` continue such a run from its checkpoint through
the core loop; the reference stays the starting model (reloaded for full-parameter runs).

Without ``--data`` it runs the demo (:class:`~paddlellm_align.demo.AlignDemo`: configuration
and a data source): SFT of the demo model of ``--model``'s family on the demo instructions,
saved to ``<output_dir>/sft-base``, then alignment (with ``--peft``, a fresh adapter whose
``base_model_name_or_path`` is that folder) on generated preferences; it reports held-out
preference accuracy and exact match before and after alignment.

The recipe (:func:`align_stage`) is written on :class:`paddlellm.training.TrainingSession`,
which owns the model, tokenizer, PEFT, strategy, optimizer, logger, resume and saving.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from paddlellm.errors import ConfigError
from paddlellm.api import MetricsLogger, TrainingSession
from paddlellm.api import format_record as _fmt

from .demo import DEMO_EVAL_RECORDS, DEMO_LOSS_DEFAULTS, DEMO_TRAIN_RECORDS, AlignDemo

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

def read_preferences(session: TrainingSession, pointwise: bool):
    """``--data`` (and ``--eval_data``, else 5% held out): (train records, held-out pairs for
    KTO's preference accuracy, eval records, exact-match questions) as the demo's source
    returns them (a file has no pairs for pointwise data and no exact-match questions)."""
    from .data import read_preference_jsonl

    config = session.config
    train = read_preference_jsonl(config.data, pointwise, config.data_columns)
    if config.eval_data:
        held = read_preference_jsonl(config.eval_data, pointwise, config.data_columns)
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

class PreferenceData:
    """Tokenized preference records: training examples, held-out examples (and, for KTO,
    held-out pairs for preference accuracy) and exact-match questions (the demo's)."""

    def __init__(self, session: TrainingSession, records, pointwise: bool) -> None:
        from .data import tokenize_records

        train_rec, eval_pair_rec, eval_rec, self.em_pairs = records
        tokenizer, config = session.tokenizer, session.config
        max_length, seed = config.max_length, config.seed
        self.train = tokenize_records(tokenizer, train_rec, max_length)
        self.eval = tokenize_records(tokenizer, eval_rec, max_length)
        self.eval_pairs = (tokenize_records(tokenizer, eval_pair_rec, max_length)
                           if eval_pair_rec and pointwise else [])
        if pointwise:
            _assign_kl_partners(self.train, seed)
            _assign_kl_partners(self.eval, seed + 1)


def setup_reference(session: TrainingSession, loss_fn, options, data: PreferenceData,
                    pointwise: bool, layout: str) -> tuple[Reference | None, str]:
    """The reference model the loss needs (or None) and how it is provided. A resumed
    full-parameter run holds the checkpoint's weights: its reference is the run's starting
    model, loaded again (precomputed values are recomputed from it)."""
    config = session.config
    if not loss_fn.needs_reference_for(options):
        return None, "none"
    original = (session.starting_model() if session.resume_dir is not None and not config.peft
                else None)
    reference = Reference.build(session.model, peft=bool(config.peft), original=original)
    if options.precompute_ref_logps:
        for examples in (data.train, data.eval):
            precompute_reference(reference, examples, pointwise, 2 * config.max_length,
                                 session.pad_id, config.per_device_eval_batch_size, layout)
        reference.release_copy()  # the frozen copy is no longer needed
        return reference, "precomputed"
    return reference, "adapters disabled" if config.peft else "frozen copy"


def align_stage(ctx) -> dict[str, Any]:
    """The recipe: preference records, the ``--align`` loss against a reference, held-out
    preference metrics (and the demo's exact match) before and after."""
    from paddlellm.api import exact_match

    if not ctx.config.align:
        raise ConfigError("the align stage needs an alignment loss: --align dpo|simpo|orpo|"
                          "ipo|hinge|kto (see `llm plugins`)")
    loss_fn = ctx.registry.load("alignment_loss", ctx.config.align)
    options = loss_fn.resolve(ctx.options("alignment_loss"), ctx.config.align)
    stage_opts = ctx.options("stage") or AlignStageConfig()
    pointwise = getattr(loss_fn, "kind", "pairwise") == "pointwise"
    session = TrainingSession(ctx, demo=AlignDemo(stage_opts, pointwise))
    options = session.demo_options("alignment_loss", options, DEMO_LOSS_DEFAULTS)
    config, strategy = session.config, session.strategy
    tokenizer = session.load_tokenizer()
    session.load_model()
    data = PreferenceData(session, session.data(lambda s: read_preferences(s, pointwise)),
                          pointwise)  # the demo: its SFT phase, then generated preferences
    model = session.adapt()
    # a shared prompt runs forward_hidden twice, which a multi-process wrapper does not see
    layout = stage_opts.pair_layout if strategy.world_size == 1 else "packed"
    if getattr(model, "positions_from_tokens", False):
        # the responses' positions depend on the prompt's tokens (GLM's 2D positions): only
        # packed rows (each sequence whole) give the model what it derives them from
        if layout == "shared_prompt":
            raise ConfigError("--pair_layout shared_prompt: this model's "
                              "positions depend on the prompt tokens; use --pair_layout packed")
        layout = "packed"
    reference, reference_kind = setup_reference(session, loss_fn, options, data, pointwise,
                                                layout)
    capacity, size, pad_id = 2 * config.max_length, config.per_device_eval_batch_size, \
        session.pad_id
    batched = lambda exs, pw: [make_batch(exs[i:i + size], pw, capacity, pad_id, layout)
                               for i in range(0, len(exs), size)]
    eval_batches, pair_batches = batched(data.eval, pointwise), batched(data.eval_pairs, False)
    logger = session.metrics_logger(AlignMetricsLogger, label=config.align)
    step_loss = PreferenceStepLoss(loss_fn, options, reference, pointwise,
                                   on_metrics=logger.window.append)
    total_steps = session.total_steps(
        math.ceil(len(data.train) / config.per_device_train_batch_size))
    phase = " (demo phase 2 of 2)" if "sft" in session.facts else ""
    session.heading(f"{config.align.upper()}{phase}: {total_steps} steps, "
                    f"{config.peft or 'all parameters'}, reference: {reference_kind}")
    session.log_start({"train_examples": len(data.train), "eval_examples": len(data.eval),
                       "reference": reference_kind})
    em = lambda: (exact_match(model, tokenizer, data.em_pairs, batch_size=size * 4)
                  if data.em_pairs else {})
    result = session.fit(
        batch_stream(data.train, config, pointwise, pad_id, strategy.shard, layout), step_loss,
        total_steps=total_steps, extra_metrics=em,
        evaluate=lambda m: evaluate_preferences(m, step_loss, eval_batches, pair_batches))
    return session.summary("align", result, align=config.align,
                           **alignment_fields(result, logger, options, data, reference_kind))


def alignment_fields(result, logger, options, data: PreferenceData, reference_kind: str) -> dict:
    """The align stage's summary fields: the loss options, the reference, the last training
    metrics and the held-out metrics before and after."""
    before, after = result.before, result.after
    train_records = [r for r in logger.records if "loss" in r]
    fields: dict[str, Any] = {
        **options.model_dump(), "reference": reference_kind,
        "train_examples": len(data.train),
        "train_metrics_last": {k: v for k, v in train_records[-1].items()
                               if k not in ("time", "step")} if train_records else {},
        "eval_before": {k: v for k, v in before.items() if k != "samples"},
        "eval_after": {k: v for k, v in after.items() if k != "samples"},
    }
    for key in ("eval_pref_accuracy", "exact_match"):
        if key in before:
            fields[f"{key}_before"], fields[f"{key}_after"] = before[key], after[key]
    if data.em_pairs:
        fields["samples_after"] = after["samples"]
    return fields


align_stage.config_class = AlignStageConfig
