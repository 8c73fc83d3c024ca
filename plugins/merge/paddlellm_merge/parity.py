"""After a merge: how often the merged model's next-token choice (top-1) agrees with each
input model's on a few fixed prompts. Loads one model at a time through
``paddlellm.AutoModelForCausalLM``; skipped, with a note, when model support is missing."""
from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

DEFAULT_PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
)


def top1_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of positions where two ``(..., T)`` arrays of top-1 token ids agree."""
    if a.shape != b.shape:
        raise ValueError(f"top-1 arrays differ in shape: {a.shape} vs {b.shape}")
    return float(np.mean(a == b)) if a.size else 1.0


def prompt_ids(path: str, prompts: Sequence[str], vocab_size: int) -> list[list[int]]:
    """Token ids of ``prompts`` with the checkpoint's tokenizer, or fixed pseudo-random ids
    (seeded, inside the vocabulary) when no tokenizer can be loaded."""
    try:
        from paddlellm.api import AutoTokenizer

        if not os.path.exists(os.path.join(path, "tokenizer.json")):
            raise FileNotFoundError("no tokenizer.json")
        tok = AutoTokenizer.from_pretrained(path)
        ids = [list(tok.encode(p))[:32] for p in prompts]
        if all(ids) and max(max(i) for i in ids) < vocab_size:
            return ids
    except Exception:
        pass
    rng = np.random.default_rng(0)
    return [rng.integers(0, vocab_size, size=12).tolist() for _ in prompts]


def _paddle_top1(path: str, ids: list[list[int]]) -> list[np.ndarray]:
    from paddlellm.api import AutoModelForCausalLM  # type: ignore[attr-defined]
    import paddle

    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model.eval()
    out = []
    with paddle.no_grad():
        for seq in ids:
            logits = model(paddle.to_tensor([seq], dtype="int64"))
            logits = getattr(logits, "logits", logits)  # (1, T, V)
            out.append(np.asarray(logits.argmax(axis=-1).numpy()).reshape(-1))
    del model
    return out


def parity_summary(output_path: str, input_paths: Sequence[str], *,
                   prompts: Sequence[str] | None = None, log: Callable[[str], None] = print,
                   top1_fn: Callable[[str, list[list[int]]], list[np.ndarray]] | None = None
                   ) -> dict[str, float] | None:
    """Print and return ``{input: agreement}``; ``None`` (with a note) when it cannot run."""
    from .sources import read_config

    cfg = read_config(output_path)
    vocab = cfg.get("vocab_size")
    if not isinstance(vocab, int):
        log("parity: skipped (no vocab_size in config.json)")
        return None
    if top1_fn is None:
        try:
            from paddlellm.api import AutoModelForCausalLM  # noqa: F401
        except ImportError:
            log("parity: skipped (paddlellm has no AutoModelForCausalLM: install paddlellm-models)")
            return None
        top1_fn = _paddle_top1
    paths = [p for p in input_paths if os.path.isdir(p)]
    if len(paths) < len(input_paths):
        log("parity: base+adapter inputs are not compared (only checkpoint directories)")
    ids = prompt_ids(output_path, prompts or DEFAULT_PROMPTS, vocab)
    try:
        merged = top1_fn(output_path, ids)
        result = {}
        for p in paths:
            other = top1_fn(p, ids)
            result[p] = float(np.mean([top1_agreement(m, o) for m, o in zip(merged, other)]))
    except Exception as exc:  # unsupported architecture etc.: a note, never a failed merge
        log(f"parity: skipped ({type(exc).__name__}: {exc})")
        return None
    n_pos = sum(len(i) for i in ids)
    log(f"parity: top-1 agreement of the merged model over {len(ids)} prompts ({n_pos} positions):")
    for p, v in result.items():
        log(f"  {v * 100:6.1f}%  {p}")
    return result
