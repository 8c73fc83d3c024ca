"""The align stage's demo: configuration and a data source (:class:`AlignDemo`).

Without ``--data``, ``llm run --align dpo`` first fine-tunes the demo model of ``--model``'s
family on the demo instructions (the ``sft`` recipe's
:func:`~paddlellm.training.stages.sft.warm_up`, all parameters; ``--demo_sft_peft`` uses the
PEFT method, merged afterwards), saves it to
``<output_dir>/sft-base`` (the base the aligned adapter names), then aligns it on generated
preferences: right answers against the SFT model's own wrong answers or plausible wrong ones.
Options the user sets (``--max_steps``, ``--learning_rate``, ...) apply to both phases;
``--demo_sft_*`` set the SFT phase alone.

The preference set: questions come from :func:`paddlellm.data.demo.demo_examples` (same
train/eval split, so held-out questions are never trained on); each wrong answer is the kind
of mistake a small model makes on that task: an off-by-one count, a neighbouring letter, a
digit out of order, the copy instead of the reverse, another colour.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from paddlellm.api import FACTS, Demo, TrainingSession, demo_examples
from paddlellm.errors import ConfigError

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

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _wrong_letters(src: str, tgt: str, rng: random.Random) -> str:
    letters = tgt.split()
    options = []
    if len(letters) > 1:
        options.append(" ".join(src.split(":", 1)[1].split()))  # the question's order
        options.append(" ".join(letters[:-1]))  # one letter dropped
        i = rng.randrange(len(letters) - 1)
        swapped = letters[:i] + [letters[i + 1], letters[i]] + letters[i + 2:]
        options.append(" ".join(swapped))  # two neighbours swapped
    j = rng.randrange(len(letters))
    changed = list(letters)
    changed[j] = rng.choice([c for c in _LETTERS if c != letters[j]]) if letters[j].isalpha() \
        else str((int(letters[j]) + rng.choice((1, 9))) % 10)
    options.append(" ".join(changed))  # one symbol wrong
    return _pick(options, tgt, rng)


def _pick(options: list[str], tgt: str, rng: random.Random) -> str:
    options = [o for o in options if o.strip() and o != tgt]
    return rng.choice(options)


def wrong_answer(example: dict[str, str], rng: random.Random) -> str:
    """A plausible wrong answer to one demo example (never equal to the right one)."""
    task, src, tgt = example["task"], example["src"], example["tgt"]
    if task in ("copy", "reverse", "sort"):
        return _wrong_letters(src, tgt, rng)
    if task == "count":
        n = int(tgt)
        return _pick([str(n - 1), str(n + 1), str(n + 2)], tgt, rng)
    if task == "next":
        i = _LETTERS.index(tgt)
        return _pick([_LETTERS[i - 1], _LETTERS[(i + 1) % 26], _LETTERS[i - 2]], tgt, rng)
    if task == "fact":
        return _pick(sorted(set(FACTS.values())), tgt, rng)
    raise ValueError(f"no wrong-answer generator for demo task '{task}'")


def demo_preferences(n: int, *, split: str = "train", seed: int = 0, pointwise: bool = False,
                     answer: Callable[[Sequence[str]], list[str]] | None = None,
                     on_policy: int = 0, tasks: Sequence[str] | None = None) -> list[dict]:
    """``n`` preference records in PaddleNLP's format (``src``, ``tgt``, ``response``,
    ``sort``, plus ``task`` and the right ``answer``). Pointwise (KTO): every other record
    holds the right answer (sort [1]), the others a wrong one (sort [0]).

    With ``answer`` (questions -> a model's answers), the first ``on_policy`` records take the
    model's own answer as the wrong one wherever it is wrong (on-policy preferences, as real
    preference sets are built from a model's samples); the rest are generated. ``tasks``
    limits the questions to those demo tasks (default: all)."""
    rng = random.Random(f"align-{seed}-{split}")
    examples = (demo_examples(n, split=split, seed=seed) if tasks is None else
                demo_examples(n, split=split, seed=seed, tasks=tuple(tasks)))
    own: list[str] = []
    if answer is not None and on_policy:
        own = answer([ex["src"] for ex in examples[:on_policy]])
    out = []
    for i, ex in enumerate(examples):
        wrong = wrong_answer(ex, rng)
        if i < len(own) and own[i].strip() and own[i].strip() != ex["tgt"]:
            wrong = own[i].strip()
        if pointwise:
            good = i % 2 == 0
            record = {"src": [ex["src"]], "tgt": [], "response": [ex["tgt"] if good else wrong],
                      "sort": [1 if good else 0]}
        else:  # chosen first or second at random, as real data comes
            responses, sort = ([ex["tgt"], wrong], [1, 0]) if rng.random() < 0.5 else \
                ([wrong, ex["tgt"]], [0, 1])
            record = {"src": [ex["src"]], "tgt": [], "response": responses, "sort": sort}
        out.append({**record, "task": ex["task"], "answer": ex["tgt"]})
    return out


# --- the demo as configuration + a data source ----------------------------------------------

def demo_sft_config(user, config, stage_opts):
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


def demo_sft(session: TrainingSession, sft_config) -> dict[str, Any]:
    """The demo's SFT phase on ``session.model`` (LoRA under ``--demo_sft_peft``, merged
    after); the model is saved to ``sft_config.output_dir`` and names it as its origin."""
    from paddlellm.api import apply_peft, dump_config, merge_adapter, warm_up

    steps, use_peft = sft_config.max_steps, bool(sft_config.peft)
    session.heading(f"SFT (demo phase 1 of 2: {steps} steps on the generated instructions, "
                    f"{sft_config.peft + ' merged after' if use_peft else 'all parameters'})")
    if use_peft:
        session.model = apply_peft(session.model, sft_config.peft,
                                   session.ctx.options("peft_method"))
    state = warm_up(session, sft_config)
    if use_peft:
        session.model = merge_adapter(session.model)
    base = Path(sft_config.output_dir).resolve()
    if session.is_main_process:  # the aligned adapter's base, loadable on its own
        session.save_files(str(base))
        (base / "run_config.json").write_text(json.dumps(dump_config(sft_config), indent=2))
    session.strategy.barrier()
    session.model.name_or_path = str(base)
    return {"steps": steps, "learning_rate": sft_config.learning_rate,
            "peft": sft_config.peft, "saved_to": str(base),
            "loss_first": state.losses[0], "loss_last": state.losses[-1]}


class AlignDemo(Demo):
    """The align stage without ``--data``: :data:`DEMO_DEFAULTS`, the SFT phase
    (``--demo_sft_steps`` > 0) and generated preferences, partly on-policy. Its data are
    the stage's ``(train records, held-out pairs, eval records, exact-match questions)``."""

    def __init__(self, stage_opts, pointwise: bool) -> None:
        super().__init__(self._preferences, DEMO_DEFAULTS)
        self.opts, self.pointwise = stage_opts, pointwise
        self.sft_config = None

    def configure(self, session: TrainingSession) -> None:
        user = session.ctx.config
        if user.resume or user.resume_from_checkpoint:
            raise ConfigError("the align demo (no --data) does not resume: its SFT phase and "
                              "generated preferences are not checkpointed; rerun it, or "
                              "resume a run with --data")
        if self.opts.demo_sft_steps:  # --demo_sft_steps 0 skips the SFT phase
            self.sft_config = demo_sft_config(user, session.config, self.opts)
            # record the SFT phase's resolved steps and learning rate
            session.record_options("stage", self.opts.model_copy(update={
                "demo_sft_steps": self.sft_config.max_steps,
                "demo_sft_learning_rate": self.sft_config.learning_rate}))

    def _preferences(self, session: TrainingSession):
        from paddlellm.api import generate_answers

        from .data import parse_record

        if self.sft_config is not None:
            session.facts["sft"] = demo_sft(session, self.sft_config)
        config, opts, pointwise = session.config, self.opts, self.pointwise
        answer = lambda questions: generate_answers(
            session.model, session.tokenizer, questions,
            batch_size=config.per_device_eval_batch_size * 4)
        rows = demo_preferences(opts.demo_train_records, split="train", seed=config.seed,
                                pointwise=pointwise, answer=answer,
                                on_policy=opts.demo_on_policy_records)
        held = demo_preferences(opts.demo_eval_records, split="eval", seed=config.seed)
        as_rec = lambda rs, pw: [parse_record(r, f"demo:{i + 1}", pw) for i, r in enumerate(rs)]
        em_pairs = [{"src": r["src"][0], "tgt": r["answer"], "task": r["task"]} for r in held]
        held_eval = (demo_preferences(opts.demo_eval_records, split="eval", seed=config.seed,
                                      pointwise=True) if pointwise else held)
        return (as_rec(rows, pointwise), as_rec(held, False), as_rec(held_eval, pointwise),
                em_pairs)
