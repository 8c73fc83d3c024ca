"""``llm convert``: stream a checkpoint to clean HF safetensors, then check parity.

The tensors are rewritten by ``paddlellm.checkpoint.convert_checkpoint`` (one at a time);
the check loads the source and the result with our decoder (float32 compute) and compares
logits on fixed prompts: top-1 agreement and max absolute / relative logit difference.
"""
from __future__ import annotations

import gc
import os
from typing import Any

import numpy as np

#: default relative-difference thresholds by output dtype (weights rounded to that dtype)
THRESHOLDS = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 6e-2}
MIN_AGREEMENT = {"float32": 1.0, "float16": 0.9, "bfloat16": 0.9}


def parity_prompts(vocab_size: int, batch: int = 4, length: int = 32, seed: int = 0) -> np.ndarray:
    """Fixed token ids ``(batch, length)`` drawn from the vocabulary (ids >= 3 when possible)."""
    rng = np.random.default_rng(seed)
    low = 3 if vocab_size > 8 else 0
    return rng.integers(low, vocab_size, size=(batch, length)).astype(np.int64)


def _logits(path: str | os.PathLike, ids: np.ndarray) -> np.ndarray:
    import paddle

    from paddlellm.api import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    with paddle.no_grad():
        out = model(paddle.to_tensor(ids)).numpy()
    del model
    gc.collect()
    return out


def compare_logits(reference: np.ndarray, candidate: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, max |a - b| and max |a - b| / max |reference|."""
    diff = float(np.abs(candidate - reference).max())
    return {"top1_agreement": float((candidate.argmax(-1) == reference.argmax(-1)).mean()),
            "max_abs_diff": diff,
            "max_rel_diff": diff / max(float(np.abs(reference).max()), 1e-30)}


def convert_and_check(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = None,
                      max_shard_size: str = "5GB", check: bool = True, batch: int = 4,
                      length: int = 32) -> dict[str, Any]:
    """Convert ``src`` to ``dst``; with ``check``, return the parity report (also the dtypes)."""
    from paddlellm.api import CheckpointReader, canonical_dtype, convert_checkpoint, read_json

    from .registry_data import family_for_model_type

    hf = read_json(os.path.join(src, "config.json"))
    family = family_for_model_type(hf.get("model_type", ""), hf, os.path.join(src, "config.json"))
    if family is None and check:
        raise ValueError(f"no model family loads model_type '{hf.get('model_type')}'; "
                         "pass --no-check to convert the tensors without a parity check")
    with CheckpointReader(src) as reader:
        floating = [n for n in reader.keys() if reader.is_floating(n)]
        src_dtype = reader.dtype(floating[0]) if floating else "float32"
    out_dtype = canonical_dtype(dtype) if dtype else src_dtype
    report: dict[str, Any] = {"src_dtype": src_dtype, "dtype": out_dtype}
    # the family reads the vocabulary size (ChatGLM calls it padded_vocab_size)
    ids = parity_prompts(family.config_from_hf(hf).vocab_size, batch, length) if check else None
    reference = _logits(src, ids) if check else None
    report["files"] = convert_checkpoint(src, dst, dtype=dtype, max_shard_size=max_shard_size)
    if check:
        report.update(compare_logits(reference, _logits(dst, ids)))
        report["threshold"] = THRESHOLDS.get(out_dtype, 1e-4)
        report["min_agreement"] = MIN_AGREEMENT.get(out_dtype, 1.0)
    return report


#: GGUF output types: thresholds of the round-trip check (GGUF read back, logits vs the source)
GGUF_THRESHOLDS = {"f32": (1e-4, 1.0), "f16": (2e-2, 0.9), "bf16": (6e-2, 0.9),
                   "q8_0": (5e-2, 0.8), "q4_0": (0.3, 0.5), "q4_1": (0.3, 0.5)}


def convert_gguf(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = None,
                 outtype: str = "f16", max_shard_size: str = "5GB", check: bool = True,
                 batch: int = 4, length: int = 32) -> dict[str, Any]:
    """``src.gguf`` -> HF directory ``dst``, or HF directory ``src`` -> ``dst.gguf``.

    Writing GGUF with ``check`` reads the file back (dequantized) and compares its logits with
    the source's, as :func:`convert_and_check` does; reading GGUF has no other reference to
    compare with, so the report is the summary only.
    """
    import tempfile

    from paddlellm.api import read_json

    from .gguf_io import gguf_to_hf, hf_to_gguf

    if str(src).endswith(".gguf"):
        if str(dst).endswith(".gguf"):
            raise ValueError("GGUF -> GGUF is not a conversion we do: give an output directory")
        info = gguf_to_hf(src, dst, dtype=dtype, max_shard_size=max_shard_size)
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(info["tensor_types"].items()))
        info["summary"] = (f"read {info['architecture']} GGUF ({kinds}) -> {info['dtype']} safetensors; "
                           f"tokenizer: {info['tokenizer'] or 'none'}; chat template: "
                           f"{'yes' if info['chat_template'] else 'no'}")
        return info
    if dtype is not None:
        raise ValueError("--dtype applies to safetensors output; for GGUF give --outtype")
    info = hf_to_gguf(src, dst, outtype=outtype)
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(info["tensor_types"].items()))
    info["summary"] = f"wrote {info['architecture']} GGUF {outtype} ({kinds}), {info['bytes']} bytes"
    if check:
        from .registry_data import family_for_model_type

        hf = read_json(os.path.join(src, "config.json"))
        family = family_for_model_type(hf["model_type"], hf, os.path.join(src, "config.json"))
        ids = parity_prompts(family.config_from_hf(hf).vocab_size,
                             batch, length)
        reference = _logits(src, ids)
        with tempfile.TemporaryDirectory() as tmp:
            gguf_to_hf(dst, tmp, dtype="float32")
            info.update(compare_logits(reference, _logits(tmp, ids)))
        info["src_dtype"], info["dtype"] = "safetensors", f"GGUF {outtype} (read back)"
        info["threshold"], info["min_agreement"] = GGUF_THRESHOLDS[outtype]
    return info
