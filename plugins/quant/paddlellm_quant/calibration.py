"""Calibration data: reading jsonl text, cutting it into token blocks, capturing layer inputs.

A calibration file is jsonl (PaddleNLP's formats): each line has ``text`` (pretraining
style) or ``src`` (+ optional ``tgt``; strings or lists of turns, as in SFT data); a plain
``.txt`` file gives one example per non-empty line. The token ids of all examples, each
followed by EOS, are concatenated and cut into ``seqlen`` blocks (the usual GPTQ/AWQ
practice: no padding in calibration batches).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np


class CalibrationDataError(ValueError):
    pass


class QuantizationWarning(UserWarning):
    """The result differs from what was asked for (``llm quantize`` prints these)."""


def warn_quantization(message: str) -> None:
    warnings.warn(message, QuantizationWarning, stacklevel=3)


class CalibrationWarning(QuantizationWarning):
    """Calibration is weaker than asked for: fewer tokens or blocks than requested or than the
    method needs, or layers that fell back to round-to-nearest. ``llm quantize`` prints these."""


def warn_calibration(message: str) -> None:
    warnings.warn(message, CalibrationWarning, stacklevel=3)


def calibration_tokens(batches: list | None) -> int:
    """Tokens in calibration batches (arrays/tensors of ids, or dicts with ``input_ids``)."""
    total = 0
    for b in batches or ():
        if isinstance(b, dict):
            if b.get("attention_mask") is not None:
                total += int(np.asarray(b["attention_mask"]).sum())
                continue
            b = b["input_ids"]
        total += int(np.prod(getattr(b, "shape", np.shape(b))))
    return total


def check_calibration_size(method: str, batches: list | None, widest_input: int,
                           minimum: int) -> int:
    """Warn (:class:`CalibrationWarning`) when ``batches`` hold fewer tokens than ``method``
    needs: ``max(minimum, 2 * widest_input)`` (a Hessian / activation statistic over
    ``widest_input`` channels estimated from fewer samples overfits them). Returns the count."""
    have = calibration_tokens(batches)
    need = max(int(minimum), 2 * int(widest_input))
    if have < need:
        warn_calibration(
            f"{method}: {have} calibration tokens, fewer than the {need} it needs for this model "
            f"(the larger of min_calibration_tokens={minimum} and twice the widest layer input, "
            f"2 x {widest_input}); the result "
            "can overfit the calibration text and come out worse than plain rounding on other "
            "text. Give more text (--calibration_data, --nsamples x --seqlen).")
    return have


def _as_text(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(value)
    raise CalibrationDataError(f"{where}: expected a string or a list of strings, got {type(value).__name__}")


def read_texts(path: str | Path) -> list[str]:
    """Texts of a calibration / held-out file (``.jsonl``/``.json`` lines or ``.txt`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationDataError(f"calibration/evaluation file not found: {path}")
    from paddlellm.api import iter_lines, parse_json_line

    texts: list[str] = []
    lines = [line.rstrip("\r\n") for _, line in iter_lines(path, "calibration file")]
    if path.suffix.lower() == ".txt":
        return [line for line in lines if line.strip()]
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = parse_json_line(line, where)
        if not isinstance(row, dict):
            raise CalibrationDataError(f"{where}: expected a JSON object with 'text' or 'src'")
        if "text" in row:
            texts.append(_as_text(row["text"], f"{where} 'text'"))
        elif "src" in row:
            parts = [_as_text(row["src"], f"{where} 'src'")]
            if row.get("tgt") is not None:
                parts.append(_as_text(row["tgt"], f"{where} 'tgt'"))
            texts.append(" ".join(parts))
        else:
            raise CalibrationDataError(f"{where}: no 'text' or 'src' field (keys: {', '.join(sorted(row))})")
    if not texts:
        raise CalibrationDataError(f"{path}: no examples")
    return texts


def demo_texts(n: int, split: str, seed: int = 0) -> list[str]:
    """Generated text of the bundled demo tasks (``split`` "train" for calibration, "eval" held out)."""
    from paddlellm.api import iter_demo_corpus

    return list(iter_demo_corpus(n, split=split, seed=seed))


def encode_texts(tokenizer: Any, texts: Iterable[str]) -> list[list[int]]:
    """Token ids of each text followed by EOS (when the tokenizer has one)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    out = []
    for text in texts:
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        out.append(ids + ([eos] if eos is not None else []))
    return out


def token_blocks(sequences: list[list[int]], seqlen: int, nsamples: int | None = None) -> np.ndarray:
    """Concatenate ``sequences`` and cut ``(n, seqlen)`` blocks (at most ``nsamples``)."""
    stream = np.fromiter((t for s in sequences for t in s), dtype=np.int64)
    n = len(stream) // seqlen
    if n == 0:
        raise CalibrationDataError(f"calibration data has {len(stream)} tokens, fewer than one "
                                   f"block of seqlen={seqlen}: give more calibration text or a "
                                   "smaller --seqlen")
    if nsamples is not None:
        if n < nsamples:
            warn_calibration(f"only {n} of the {nsamples} requested calibration blocks of {seqlen} "
                             f"tokens could be cut from {len(stream)} tokens of calibration data "
                             f"({n * seqlen} tokens used, {nsamples * seqlen} requested)")
        n = min(n, nsamples)
    return stream[: n * seqlen].reshape(n, seqlen)


def batches(blocks: np.ndarray, batch_size: int) -> list[np.ndarray]:
    return [blocks[i:i + batch_size] for i in range(0, len(blocks), batch_size)]


class StopForward(Exception):
    """Raised by a hook to end a calibration forward once the layers of interest have run."""


def run_capture(model: Any, input_batches: list[np.ndarray], layers: dict[str, Any],
                on_input: Callable[[str, np.ndarray], None], stop_after: Any = None) -> None:
    """Run ``model`` on ``input_batches``; ``on_input(name, x)`` gets each hooked layer's input
    as float32 ``(tokens, in_features)``. ``stop_after``: a sublayer after whose forward the
    pass is cut short (layers later in the model are not run)."""
    import paddle

    handles = []
    for name, layer in layers.items():
        def pre_hook(_layer, inputs, name=name):
            x = inputs[0]
            on_input(name, x.astype("float32").reshape([-1, x.shape[-1]]).numpy())
        handles.append(layer.register_forward_pre_hook(pre_hook))
    if stop_after is not None:
        def stop(_layer, _inputs, _output):
            raise StopForward
        handles.append(stop_after.register_forward_post_hook(stop))
    try:
        with paddle.no_grad():
            for ids in input_batches:
                try:
                    model(paddle.to_tensor(ids))
                except StopForward:
                    pass
    finally:
        for h in handles:
            h.remove()


def decoder_blocks(model: Any) -> list[Any]:
    """The repeated blocks of a decoder (the first ``LayerList`` of the model), for
    block-by-block (sequential) quantization; ``[model]`` when there is none."""
    import paddle.nn as nn

    for _, layer in model.named_sublayers():
        if isinstance(layer, nn.LayerList):
            return list(layer)
    return [model]


def blocks_with_targets(model: Any, targets: dict[str, Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(block, {name: layer})`` for each of :func:`decoder_blocks` holding any of ``targets``
    (``{name: layer}``), in order; lazily, so a block's layers are looked up after the blocks
    before it were quantized."""
    for block in decoder_blocks(model):
        block_ids = {id(l) for l in block.sublayers(include_self=True)}
        layers = {n: l for n, l in targets.items() if id(l) in block_ids}
        if layers:
            yield block, layers


def calibration_batches(calibration: Iterable[Any]) -> Iterator[tuple["paddle.Tensor", "paddle.Tensor | None"]]:
    """``(input_ids (B, T), attention_mask or None)`` from tensors, id lists, arrays or dicts
    with ``input_ids`` (and ``attention_mask``)."""
    import paddle

    for item in calibration:
        mask = None
        if isinstance(item, dict):
            item, mask = item["input_ids"], item.get("attention_mask")
        ids = item if isinstance(item, paddle.Tensor) else paddle.to_tensor(np.asarray(item, dtype=np.int64))
        if ids.ndim == 1:
            ids = ids.unsqueeze(0)
        if mask is not None and not isinstance(mask, paddle.Tensor):
            mask = paddle.to_tensor(np.asarray(mask, dtype=np.int64)).reshape(ids.shape)
        yield ids, mask
