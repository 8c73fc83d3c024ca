"""The bundled demo tasks: small, generated, exactly checkable.

Every example is a ``{"src", "tgt"}`` pair (PaddleNLP's SFT format) whose answer is
determined by its question, so held-out exact match measures learning, not memory:
copying, reversing and counting letters, sorting digits (skills that generalise to unseen
questions), and two small look-up tables: the alphabet's successor and made-up animal
colours (knowledge that must be learned from the training text itself).
"""
from __future__ import annotations

import hashlib
import random
from typing import Callable, Iterator

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ANIMALS = ["cat", "dog", "owl", "fox", "bee", "elk", "yak", "eel", "ant", "bat", "cow", "hen"]
_COLOURS = ["red", "blue", "green", "gold", "pink", "grey", "teal", "navy"]


def _letters(rng: random.Random) -> list[str]:
    return [rng.choice(_LETTERS) for _ in range(rng.randint(3, 6))]


def _copy(rng: random.Random) -> tuple[str, str]:
    letters = " ".join(_letters(rng))
    return f"Repeat: {letters}", letters


def _reverse(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng)
    return f"Reverse: {' '.join(letters)}", " ".join(reversed(letters))


def _sort(rng: random.Random) -> tuple[str, str]:
    digits = [rng.randint(0, 9) for _ in range(rng.randint(3, 6))]
    return f"Sort: {' '.join(map(str, digits))}", " ".join(map(str, sorted(digits)))


def _count(rng: random.Random) -> tuple[str, str]:
    letters = _letters(rng)
    return f"Count: {' '.join(letters)}", str(len(letters))


def _next(rng: random.Random) -> tuple[str, str]:
    i = rng.randrange(len(_LETTERS) - 1)
    return f"What comes after {_LETTERS[i]}?", _LETTERS[i + 1]


def _fact(rng: random.Random) -> tuple[str, str]:
    animal = rng.choice(_ANIMALS)
    return f"What colour is the {animal}?", FACTS[animal]


#: the made-up facts the look-up task asks about (fixed, so they can be learned)
FACTS = {animal: _COLOURS[(i * 5) % len(_COLOURS)] for i, animal in enumerate(_ANIMALS)}

TASKS: dict[str, Callable[[random.Random], tuple[str, str]]] = {
    "copy": _copy, "reverse": _reverse, "sort": _sort, "count": _count, "next": _next,
    "fact": _fact,
}
#: tasks with a small fixed set of questions, asked in both splits (knowledge, not skill)
SHARED_TASKS = ("next", "fact")


def _is_held_out(question: str, fraction: float) -> bool:
    digest = hashlib.sha1(question.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < fraction


def demo_examples(n: int, *, split: str = "train", seed: int = 0, held_out: float = 0.1,
                  tasks: tuple[str, ...] = tuple(TASKS)) -> list[dict[str, str]]:
    """``n`` examples of the ``split`` ("train" or "eval"), round-robin over ``tasks``.

    The split is decided by a hash of the question; the few questions of ``SHARED_TASKS``
    occur in both splits, every other task's eval questions never occur in train.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    rng = random.Random(f"{seed}-{split}")
    out: list[dict[str, str]] = []
    order = list(tasks)
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 1000 * max(n, 1):
            raise RuntimeError("could not generate enough distinct demo examples")
        task = order[len(out) % len(order)]
        question, answer = TASKS[task](rng)
        if task not in SHARED_TASKS and _is_held_out(question, held_out) != (split == "eval"):
            continue
        out.append({"src": question, "tgt": answer, "task": task})
    return out


def demo_text(example: dict[str, str]) -> str:
    """The plain-text form used for pretraining: ``question answer``."""
    return f"{example['src']} {example['tgt']}"


def iter_demo_corpus(n: int, *, split: str = "train", seed: int = 0) -> Iterator[str]:
    for example in demo_examples(n, split=split, seed=seed):
        yield demo_text(example)
