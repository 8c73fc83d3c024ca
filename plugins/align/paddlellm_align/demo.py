"""The demo preference set: the bundled demo tasks' correct answer against a plausible wrong one.

Questions come from :func:`paddlellm.data.demo.demo_examples` (same train/eval split, so
held-out questions are never trained on); each wrong answer is the kind of mistake a small
model makes on that task: an off-by-one count, a neighbouring letter, a digit out of order,
the copy instead of the reverse, another colour.
"""
from __future__ import annotations

import random
from typing import Callable, Sequence

from paddlellm.api import FACTS, demo_examples

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
                     on_policy: int = 0) -> list[dict]:
    """``n`` preference records in PaddleNLP's format (``src``, ``tgt``, ``response``,
    ``sort``, plus ``task`` and the right ``answer``). Pointwise (KTO): every other record
    holds the right answer (sort [1]), the others a wrong one (sort [0]).

    With ``answer`` (questions -> a model's answers), the first ``on_policy`` records take the
    model's own answer as the wrong one wherever it is wrong (on-policy preferences, as real
    preference sets are built from a model's samples); the rest are generated."""
    rng = random.Random(f"align-{seed}-{split}")
    examples = demo_examples(n, split=split, seed=seed)
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
