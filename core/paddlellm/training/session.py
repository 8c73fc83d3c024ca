"""The training session: what every stage shares, built once (torchtune's ``setup → train``).

A stage is a short recipe on a :class:`TrainingSession`: it supplies its data, its step loss,
its evaluation and its summary fields; the session owns the rest in one place:

* the configuration, with the stage's :class:`Demo` defaults applied when there is no
  ``--data`` (and recorded, so ``run_config.json`` shows the values used);
* the starting checkpoint (``--model_name_or_path``, else ``--model``'s demo model:
  :func:`paddlellm.training.start.resolve_run_model`), the seed and ``--resume``;
* the tokenizer and the model (``--recompute``, ``--quant_type``), PEFT (``--peft``, the
  adapter of a resumed run) and the strategy's wrapping;
* the optimizer and schedule, the metrics logger, the loop with its checkpoints, exact
  resume, the evaluation before and after, and the final save through the strategy (a
  tensor-parallel strategy gathers its split weights for it);
* the summary fields every stage reports (steps, losses, PEFT, trainable parameters).

A recipe (the full ``sft`` stage is :mod:`paddlellm.training.stages.sft`)::

    session = TrainingSession(ctx, demo=DEMO)      # DEMO: defaults + a demo data source
    session.load_tokenizer()
    model = session.setup_model()                  # load, PEFT, strategy.wrap_model
    train, held = session.data(read_my_files)      # the demo source without --data
    result = session.fit(batches, batch_loss, total_steps=session.total_steps(len(train)),
                         evaluate=lambda m: evaluate_lm(m, held, batch_loss))
    return session.summary("mine", result, train_examples=len(train))
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from ..errors import ConfigError


class Demo:
    """What a stage runs without ``--data``: settings for the options the user left unset
    and a data source. Configuration, not branches: the stage's recipe is the same with and
    without it (:meth:`TrainingSession.data` picks the source).

    ``data(session)`` returns what the stage's own reader returns for ``--data``.
    Subclasses may override :meth:`configure` (called once the defaults apply, before the
    model is resolved) to derive more settings or refuse options the demo cannot honour.
    """

    def __init__(self, data: Callable[["TrainingSession"], Any],
                 defaults: Mapping[str, Any] | None = None) -> None:
        self.source = data
        self.defaults = dict(defaults or {})

    def configure(self, session: "TrainingSession") -> None:
        """Hook: adjust ``session`` before the model is loaded (default: nothing)."""

    def data(self, session: "TrainingSession") -> Any:
        return self.source(session)


@dataclass
class FitResult:
    """What :meth:`TrainingSession.fit` returns: the loop's state, the evaluation before and
    after training and the number of optimizer steps."""

    state: Any  # paddlellm.training.loop.TrainState
    before: dict
    after: dict
    total_steps: int


class TrainingSession:
    """The shared parts of a training stage, built from the :class:`~paddlellm.training.compose.RunContext`.

    Construction applies the demo's defaults, resolves the starting checkpoint (honouring
    ``--model``), seeds Paddle and finds the checkpoint to resume; the recipe then calls
    :meth:`load_tokenizer`, :meth:`load_model` / :meth:`adapt` (or :meth:`setup_model` for
    both), :meth:`data`, :meth:`fit` and :meth:`summary`, in the order its data needs.

    ``pretrained``: the stage starts from trained weights (fine-tuning, alignment: the demo
    model of ``--model``'s family without ``--model_name_or_path``); else a fresh model of
    the ``--model`` preset is built unless ``--model_name_or_path`` is given (pretraining).
    """

    def __init__(self, ctx: Any, *, demo: Demo | None = None, pretrained: bool = True) -> None:
        import paddle

        from .start import resolve_run_model
        from .checkpointing import resume_checkpoint

        self.ctx, self.strategy, self.pretrained = ctx, ctx.strategy, pretrained
        self.config = ctx.config
        self.demo = demo
        self.is_demo = demo is not None and self.config.data is None
        #: the demo's values for options the user did not set (reported in the summary)
        self.demo_defaults: dict[str, Any] = {}
        #: extra summary fields a demo or a phase adds (e.g. the align demo's SFT phase)
        self.facts: dict[str, Any] = {}
        self.tokenizer: Any = None
        self.model: Any = None
        self.logger: Any = None
        if self.is_demo:
            unset = {k: v for k, v in demo.defaults.items()
                     if k not in self.config.model_fields_set}
            if unset:
                self._use(self.config.model_copy(update=unset))
                self.demo_defaults.update(unset)
            demo.configure(self)
        if self.is_main_process:  # a logger's missing library stops the run before the model
            from ..loggers import check_installed

            check_installed(self.config.loggers)
        #: the checkpoint the run starts from (None: a fresh model of the --model preset)
        # the configuration with the demo's settings (a demo may name its starting model)
        self.source = resolve_run_model(replace(ctx, config=self.config), pretrained=pretrained)
        paddle.seed(self.config.seed)
        self.resume_dir: Path | None = resume_checkpoint(self.config)

    # --- configuration -----------------------------------------------------------------------

    @property
    def output_dir(self) -> Path:
        return Path(self.config.output_dir)

    @property
    def is_main_process(self) -> bool:
        return self.strategy.is_main_process

    def _use(self, config: Any) -> None:
        self.config = config
        self.ctx.use_config(config)  # written to run_config.json

    def record_options(self, kind: str, options: Any) -> None:
        """Record the options a plugin of ``kind`` (or the stage) actually runs with."""
        self._use(self.config.model_copy(update={
            "plugin_options": {**self.config.plugin_options, kind: options}}))

    def demo_options(self, kind: str, options: Any, defaults: Mapping[str, Any]) -> Any:
        """``options`` (a plugin's pydantic options) with the demo's ``defaults`` for the fields
        it has and the user did not set; recorded and reported. Without a demo: ``options``."""
        if not self.is_demo:
            return options
        unset = {k: v for k, v in defaults.items()
                 if k in type(options).model_fields and k not in options.model_fields_set}
        options = options.model_copy(update=unset)
        self.demo_defaults.update(unset)
        self.record_options(kind, options)
        return options

    def heading(self, text: str) -> None:
        """A phase heading on the main process (``== text ==``)."""
        from .metrics import print_heading

        print_heading(text, enabled=self.is_main_process)

    # --- tokenizer, model, PEFT, strategy ----------------------------------------------------

    def tokenizer_source(self) -> str | None:
        """Where the tokenizer comes from: the resumed checkpoint, ``--tokenizer_name_or_path``,
        else the starting checkpoint (None for a fresh model: the stage makes one)."""
        source = self.resume_dir or self.config.tokenizer_name_or_path or self.source
        return str(source) if source else None

    def load_tokenizer(self, path: str | Path | None = None) -> Any:
        """The tokenizer from ``path`` or :meth:`tokenizer_source`; kept as ``self.tokenizer``."""
        from ..tokenizer import AutoTokenizer

        path = path or self.tokenizer_source()
        if path is None:
            raise ConfigError("no tokenizer: give --tokenizer_name_or_path or "
                              "--model_name_or_path")
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        return self.tokenizer

    @property
    def pad_id(self) -> int:
        """The tokenizer's padding id (its end-of-sequence id when it has none)."""
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

    def load_model(self, *, vocab_size: int | None = None) -> Any:
        """The model before PEFT and wrapping (float32; ``--recompute``, ``--quant_type``
        applied), kept as ``self.model``: the resumed checkpoint's weights (with ``--peft``
        the base's; the adapter comes in :meth:`adapt`), else the starting checkpoint, else
        (pretraining) a fresh model of ``vocab_size`` from the ``--model`` preset."""
        from ..modeling.prepare import build_model

        config = self.config
        if self.resume_dir is not None and not config.peft:
            path = str(self.resume_dir)
        else:
            path = self.source if self.pretrained else None
        self.model = build_model(replace(self.ctx, config=config),
                                 vocab_size=vocab_size or self._vocab_size(),
                                 demo=self.is_demo, tokenizer=self.tokenizer, path=path)
        return self.model

    def starting_model(self) -> Any:
        """A new copy of the model the run started from (a reference model for alignment,
        e.g. when the session's model holds a resumed checkpoint's weights)."""
        from ..modeling.prepare import build_model

        return build_model(replace(self.ctx, config=self.config), vocab_size=self._vocab_size(),
                           demo=self.is_demo, tokenizer=self.tokenizer, path=self.source)

    def _vocab_size(self) -> int | None:
        return len(self.tokenizer) if self.tokenizer is not None else None

    def adapt(self) -> Any:
        """``--peft`` on ``self.model`` (a resumed run's adapter, or ``--lora_path``), then the
        strategy's wrapping; prints the trainable-parameter report. Returns the model."""
        from ..modeling.peft import setup_run_peft

        model = setup_run_peft(self.model, self.config, self.ctx.options("peft_method"),
                               self.resume_dir)
        self.model = self.strategy.wrap_model(model)
        return self.model

    def setup_model(self, *, vocab_size: int | None = None) -> Any:
        """:meth:`load_model`, then :meth:`adapt`."""
        self.load_model(vocab_size=vocab_size)
        return self.adapt()

    # --- data --------------------------------------------------------------------------------

    def data(self, read: Callable[["TrainingSession"], Any]) -> Any:
        """The stage's data: ``read(session)`` for ``--data``, the demo's source without it."""
        if self.is_demo:
            return self.demo.data(self)
        if self.config.data is None:
            raise ConfigError(f"the {self.config.stage} stage needs --data (it has no demo)")
        return read(self)

    def total_steps(self, batches_per_epoch: int | float, batches_per_step: int | None = None
                    ) -> int:
        """Optimizer steps of the run: ``--max_steps``, else ``--num_train_epochs`` epochs of
        ``batches_per_epoch`` batches, ``batches_per_step`` per optimizer step (default:
        gradient accumulation × data-parallel processes)."""
        config = self.config
        if config.max_steps > 0:
            return config.max_steps
        per_step = (batches_per_step if batches_per_step is not None
                    else config.gradient_accumulation_steps * self.strategy.world_size)
        return max(1, math.ceil(config.num_train_epochs * batches_per_epoch / per_step))

    # --- training ----------------------------------------------------------------------------

    def metrics_logger(self, cls: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """The run's metrics logger (``cls``: a :class:`MetricsLogger` subclass): records go to
        ``metrics.jsonl`` and, on the main process, to the ``--loggers`` the run selected
        (built and started here, so a missing library stops the run before training)."""
        from ..loggers import build_loggers
        from .metrics import MetricsLogger

        loggers = (build_loggers(self.config, self.ctx.registry, self.output_dir)
                   if self.is_main_process else [])
        self.logger = (cls or MetricsLogger)(self.output_dir / "metrics.jsonl",
                                             enabled=self.is_main_process, loggers=loggers,
                                             **kwargs)
        return self.logger

    def log_start(self, record: Mapping[str, Any]) -> None:
        """A step-0 record of facts about the data (a resumed run has it already)."""
        if self.resume_dir is None:
            (self.logger or self.metrics_logger()).log({"step": 0, **record})

    def build_optimizer(self, total_steps: int, config: Any = None, model: Any = None):
        """``(optimizer, scheduler)`` for the trainable parameters of ``model`` (default: the
        session's, whose optimizer the strategy wraps)."""
        from .optim import build_optimizer

        optimizer, scheduler = build_optimizer(model if model is not None else self.model,
                                               config or self.config, total_steps)
        if model is None:
            optimizer = self.strategy.wrap_optimizer(optimizer)
        return optimizer, scheduler

    def fit(self, batches: Iterator[dict], step_loss: Callable, *, total_steps: int,
            evaluate: Callable[[Any], dict], extra_metrics: Callable[[], dict] | None = None,
            save: Callable[[str], None] | None = None) -> FitResult:
        """Train ``self.model`` for ``total_steps`` optimizer steps on ``batches`` (endless)
        with ``step_loss(model, batch) -> (loss, tokens)``: evaluation before and after (and
        every ``--eval_steps``), checkpoints every ``--save_steps``, exact resume, and the
        final model (or adapter) saved to ``--output_dir`` through the strategy.
        ``save(directory)`` replaces :meth:`save_files` (a model with its own layout, e.g. a
        reward model's score head)."""
        from .loop import train_and_evaluate

        optimizer, scheduler = self.build_optimizer(total_steps)
        logger = self.logger or self.metrics_logger()
        try:
            state, before, after = train_and_evaluate(
                self.model, optimizer, scheduler, batches, step_loss, config=self.config,
                ctx=self.ctx, total_steps=total_steps, logger=logger, evaluate=evaluate,
                extra_metrics=extra_metrics, save=save or self.save_files,
                resume_from=str(self.resume_dir) if self.resume_dir else None)
        finally:  # an interrupted run still closes its event files and draws its plot
            logger.close()
        return FitResult(state, before, after, total_steps)

    def train_phase(self, config: Any, batches: Iterator[dict], step_loss: Callable, *,
                    total_steps: int, metrics: str, label: str) -> Any:
        """A phase before the stage's own training (the align demo's SFT warm-up): ``config``'s
        optimizer settings on ``self.model`` as it is (before :meth:`adapt`), logged to
        ``output_dir/metrics``; no evaluation, checkpoints or resume. Returns the loop state."""
        from .loop import train
        from .metrics import MetricsLogger

        optimizer, scheduler = self.build_optimizer(total_steps, config, model=self.model)
        logger = MetricsLogger(self.output_dir / metrics, enabled=self.is_main_process,
                               label=label)
        return train(self.model, optimizer, scheduler, batches, step_loss, config=config,
                     ctx=self.ctx, total_steps=total_steps, logger=logger)

    def save_files(self, directory: str) -> None:
        """Write the model (or, with PEFT, the adapter) and the tokenizer into ``directory``
        (the files of a checkpoint; the loop adds the optimizer state)."""
        from ..modeling.peft import save_model_or_adapter

        save_model_or_adapter(self.model, self.tokenizer, directory)

    def save(self, directory: str | Path) -> None:
        """Save through the strategy: collective where its weights are split (tensor
        parallel gathers them), written by the main process."""
        from .loop import save_final

        save_final(self.strategy, self.model, self.save_files, str(directory))

    # --- summary -----------------------------------------------------------------------------

    def summary(self, stage: str, result: FitResult, **fields: Any) -> dict[str, Any]:
        """The run summary: the fields every stage reports, then the stage's ``fields`` (and
        the :attr:`facts` a demo added); ``eval_loss`` before and after when the evaluation
        measured it."""
        from ..modeling.peft import trainable_parameter_report

        state, before, after = result.state, result.before, result.after
        trainable, total, _ = trainable_parameter_report(self.model)
        out: dict[str, Any] = {
            "stage": stage, "demo": self.is_demo, "demo_defaults": self.demo_defaults,
            "model": self.source, **self.facts, "steps": state.step,
            "resumed_from": str(self.resume_dir) if self.resume_dir else None,
            "peft": self.config.peft, "trainable_params": trainable, "total_params": total,
            "trainable_percent": 100.0 * trainable / max(total, 1),
            "train_loss_first": state.losses[0], "train_loss_last": state.losses[-1],
        }
        if "eval_loss" in before and "eval_loss" in after:
            out.update(eval_loss_before=before["eval_loss"], eval_loss_after=after["eval_loss"])
        out.update(fields)
        out["output_dir"] = str(self.output_dir)
        return out
