"""The ``sft`` stage: supervised fine-tuning on conversations, loss on responses only.

``--data`` is SFT jsonl (``{"src", "tgt"}`` or OpenAI ``messages``; 5% held out without
``--eval_data``). Without it the demo fine-tunes the demo model of ``--model``'s family
(bundled, or built once: :func:`paddlellm.training.start.resolve_run_model`) on the generated demo
instructions, with :data:`DEMO_DEFAULTS`, and reports held-out exact match before and after.
``--zero_padding`` packs several examples per sequence with block-diagonal attention and
restarting positions.

:func:`warm_up` runs this recipe's training as a phase of another stage (the align demo's
SFT before alignment).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ..session import Demo, TrainingSession

DEMO_TRAIN_EXAMPLES = 3000
DEMO_EVAL_EXAMPLES = 300
#: settings of the bundled demo, applied to the options the user did not set
DEMO_DEFAULTS = {"learning_rate": 2e-3, "num_train_epochs": 2.0, "warmup_steps": 20,
                 "lr_scheduler_type": "cosine", "max_length": 128}


def make_batches(examples: Sequence, config, pad_id: int, *, seed: int, shuffle: bool
                 ) -> list[dict[str, np.ndarray]]:
    """One epoch of batches (packed with ``--zero_padding``, else right-padded)."""
    from ...data.sft import pack_examples, packed_batch, pad_batch

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


# --- data sources: (train conversations, eval conversations, exact-match pairs or None) -----

def demo_conversations(session: TrainingSession) -> tuple[list, list, list[dict]]:
    """The demo's data: generated instructions (held-out ones for exact match)."""
    from ...data.demo import demo_examples
    from ...data.sft import record_to_messages

    seed = session.config.seed
    train = demo_examples(DEMO_TRAIN_EXAMPLES, split="train", seed=seed)
    held = demo_examples(DEMO_EVAL_EXAMPLES, split="eval", seed=seed)
    as_conv = lambda rows: [record_to_messages(r, "demo") for r in rows]
    return as_conv(train), as_conv(held), held


def read_conversations(session: TrainingSession) -> tuple[list, list, list[dict] | None]:
    """``--data`` (and ``--eval_data``, else 5% held out); single-turn held-out
    conversations are also scored by exact match."""
    from ...data.sft import read_sft_jsonl

    config = session.config
    train = read_sft_jsonl(config.data, config.data_columns)
    if config.eval_data:
        held = read_sft_jsonl(config.eval_data, config.data_columns)
    else:
        n_eval = max(1, len(train) // 20)
        train, held = train[n_eval:], train[:n_eval]
    pairs = [{"src": c[-2]["content"], "tgt": c[-1]["content"]} for c in held
             if len(c) == 2 and c[0]["role"] == "user" and c[-1]["role"] == "assistant"]
    return train, held, pairs or None


DEMO = Demo(demo_conversations, DEMO_DEFAULTS)


@dataclass
class SFTData:
    """Tokenized conversations and the batches the recipe trains and evaluates on."""

    train: list
    dropped: int  # training conversations longer than --max_length
    one_epoch: list[dict]  # the first epoch's batches (as trained: packed with --zero_padding)
    unpacked: list[dict]  # the same epoch right-padded (the packing's padding saving)
    eval_batches: list[dict]
    eval_pairs: list[dict] | None

    @classmethod
    def tokenize(cls, session: TrainingSession, train_conv, eval_conv, eval_pairs) -> "SFTData":
        from ...data.sft import tokenize_all
        from ...errors import ConfigError

        config, tokenizer, pad_id = session.config, session.tokenizer, session.pad_id
        train, dropped = tokenize_all(tokenizer, train_conv, config.max_length)
        held, _ = tokenize_all(tokenizer, eval_conv, config.max_length)
        if not train:
            raise ConfigError(f"no training example fits --max_length {config.max_length}")
        padded = config.model_copy(update={"zero_padding": False})
        return cls(train, dropped,
                   make_batches(train, config, pad_id, seed=config.seed, shuffle=True),
                   make_batches(train, padded, pad_id, seed=config.seed, shuffle=True),
                   make_batches(held, padded, pad_id, seed=0, shuffle=False), eval_pairs)


def sft_stage(ctx: Any) -> dict[str, Any]:
    """The recipe: conversations, response-only causal-LM loss, eval loss + exact match."""
    from ...data.sft import padding_ratio
    from ...modeling.evaluation import exact_match
    from ..loop import evaluate_lm
    from ..loss import batch_loss

    session = TrainingSession(ctx, demo=DEMO)
    config = session.config
    tokenizer = session.load_tokenizer()
    session.heading(f"SFT ({config.peft or 'all parameters'})")
    model = session.setup_model()
    data = SFTData.tokenize(session, *session.data(read_conversations))
    total_steps = session.total_steps(len(data.one_epoch))
    ratios = {"padding_ratio": padding_ratio(data.one_epoch),
              "padding_ratio_unpacked": padding_ratio(data.unpacked)}
    session.log_start({"train_examples": len(data.train), "dropped_too_long": data.dropped,
                       "batches_per_epoch": len(data.one_epoch), **ratios})
    em = lambda: (exact_match(model, tokenizer, data.eval_pairs,
                              batch_size=config.per_device_eval_batch_size * 4)
                  if data.eval_pairs else {})
    result = session.fit(epoch_stream(data.train, config, session.pad_id, session.strategy.shard),
                         batch_loss, total_steps=total_steps, extra_metrics=em,
                         evaluate=lambda m: evaluate_lm(m, data.eval_batches, batch_loss))
    before, after = result.before, result.after
    fields: dict[str, Any] = {"train_examples": len(data.train), **ratios}
    if data.eval_pairs:
        fields.update(exact_match_before=before["exact_match"],
                      exact_match_after=after["exact_match"], eval_examples=after["count"],
                      exact_match_by_task_before=before.get("by_task", {}),
                      exact_match_by_task_after=after.get("by_task", {}),
                      samples_after=after["samples"])
    return session.summary("sft", result, **fields)


def warm_up(session: TrainingSession, config: Any, *, metrics: str = "sft_metrics.jsonl"
            ) -> Any:
    """SFT of ``session.model`` (before :meth:`~TrainingSession.adapt`) on the demo
    instructions with ``config``'s settings for ``config.max_steps`` steps: a phase of
    another stage's demo. Returns the loop state (``losses``)."""
    from ...data.sft import tokenize_all
    from ..loss import batch_loss

    train_conv, _, _ = demo_conversations(session)
    examples, _ = tokenize_all(session.tokenizer, train_conv, config.max_length)
    batches = epoch_stream(examples, config, session.pad_id, session.strategy.shard)
    return session.train_phase(config, batches, batch_loss, total_steps=config.max_steps,
                               metrics=metrics, label="sft")
