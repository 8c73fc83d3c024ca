"""GGUF -> Hugging Face layout: ``config.json``, ``model.safetensors`` (shards), tokenizer files
and ``generation_config.json``.

The container is read with the ``gguf`` package (llama.cpp's own reader: the file is mmapped,
nothing in it is executed); tensors are renamed, dequantized with ``gguf.quants`` and written one
at a time through the core's streaming safetensors writer, so memory stays about one
dequantized tensor, not the model.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .arch import ARCHES, GGUFError, hf_name, llama3_scaling_from_factors, unpermute_qk

#: GGML tensor types we read (quantized ones are dequantized to float32)
READABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1",
            "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def _open(path: str | os.PathLike):
    try:
        from gguf import GGUFReader
    except ImportError as exc:  # a declared dependency of paddlellm-models
        raise GGUFError(f"reading {path} needs the 'gguf' package (pip install gguf): {exc}") from None
    try:
        return GGUFReader(str(path), "r")
    except (ValueError, OSError, KeyError) as exc:
        raise GGUFError(f"{path}: not a readable GGUF file ({exc})") from None


def gguf_fields(reader) -> dict[str, Any]:
    """The metadata as plain Python values (strings, numbers, lists)."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        value = field.contents()
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, (float, np.floating)) and field.types and field.types[0].name == "FLOAT32":
            value = float(str(np.float32(value)))  # the shortest decimal of the stored float32 (1e-05)
        out[key] = value
    return out


def is_gguf(path: str | os.PathLike) -> bool:
    """True for a file that starts with the GGUF magic."""
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as handle:
        return handle.read(4) == b"GGUF"


def hf_config_from_gguf(fields: dict[str, Any], path: str, tensors: dict[str, Any]) -> dict[str, Any]:
    """The Hugging Face ``config.json`` for the GGUF hyper-parameters."""
    arch = fields.get("general.architecture")
    if arch not in ARCHES:
        raise GGUFError(f"{path}: general.architecture '{arch}' is not supported "
                        f"(supported: {', '.join(ARCHES)})")
    model_type, architecture, _ = ARCHES[arch]

    def get(key: str, default: Any = None, required: bool = False) -> Any:
        full = f"{arch}.{key}"
        if full not in fields:
            if required:
                raise GGUFError(f"{path}: metadata field '{full}' is missing")
            return default
        return fields[full]

    hidden = int(get("embedding_length", required=True))
    heads = int(get("attention.head_count", required=True))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        raise GGUFError(f"{path}: '{arch}.attention.head_count_kv' varies per layer; not supported")
    head_dim = int(get("attention.key_length", 0) or get("rope.dimension_count", 0) or hidden // heads)
    vocab = int(get("vocab_size", 0) or len(fields.get("tokenizer.ggml.tokens") or [])
                or tensors["token_embd.weight"].shape[1])
    theta = float(get("rope.freq_base", 10000.0))
    config: dict[str, Any] = {
        "architectures": [architecture], "model_type": model_type,
        "vocab_size": vocab, "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length", required=True)),
        "num_hidden_layers": int(get("block_count", required=True)),
        "num_attention_heads": heads, "num_key_value_heads": int(kv_heads), "head_dim": head_dim,
        "hidden_act": "silu", "max_position_embeddings": int(get("context_length", 2048)),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_theta": theta, "rope_scaling": None,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": "blk.0.attn_q.bias" in tensors and model_type == "llama",
        "torch_dtype": "float32",
    }
    kind = get("rope.scaling.type")
    if kind in ("linear", "yarn"):
        scaling = {"rope_type": kind, "factor": float(get("rope.scaling.factor", 1.0))}
        if kind == "yarn":
            scaling["original_max_position_embeddings"] = int(get("rope.scaling.original_context_length",
                                                                  config["max_position_embeddings"]))
        config["rope_scaling"] = scaling
    elif kind not in (None, "none"):
        raise GGUFError(f"{path}: '{arch}.rope.scaling.type' '{kind}' is not supported (linear, yarn are)")
    if "rope_freqs.weight" in tensors:
        factors = np.asarray(tensors["rope_freqs.weight"].data, dtype=np.float32).reshape(-1)
        config["rope_scaling"] = llama3_scaling_from_factors(factors, head_dim, theta, path)
    for name, key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                      ("pad_token_id", "padding_token_id")):
        value = fields.get(f"tokenizer.ggml.{key}")
        config[name] = int(value) if value is not None else None
    return config


def _dequantize(tensor, path: str) -> tuple[np.ndarray, str]:
    """``(array in storage form, dtype name)``: F32/F16 as stored, BF16 as raw bits, quantized
    types dequantized to float32; the array has the HF (row-major) shape."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import dequantize

    kind = T(tensor.tensor_type)
    shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))  # GGML lists the fastest dim first
    if kind.name not in READABLE:
        raise GGUFError(f"{path}: tensor '{tensor.name}' has type {kind.name}, which we do not read "
                        f"(supported: {', '.join(READABLE)})")
    if kind == T.F32:
        return np.asarray(tensor.data, dtype=np.float32).reshape(shape), "float32"
    if kind == T.F16:
        return np.asarray(tensor.data, dtype=np.float16).reshape(shape), "float16"
    if kind == T.BF16:
        return np.asarray(tensor.data).view(np.uint16).reshape(shape), "bfloat16"
    return dequantize(tensor.data, kind).astype(np.float32, copy=False).reshape(shape), "float32"


def gguf_to_hf(src: str | os.PathLike, dst: str | os.PathLike, *, dtype: str | None = None,
               max_shard_size: str = "5GB") -> dict[str, Any]:
    """Convert the GGUF file ``src`` into a Hugging Face checkpoint directory ``dst``.

    ``dtype`` (float32, float16, bfloat16) casts every tensor; by default float16/bfloat16 files
    stay in their dtype and quantized ones become float32. Returns a summary: architecture,
    tensor types found, files written.
    """
    from paddlellm.api import TensorSource, canonical_dtype, convert_storage, write_sharded

    path = str(src)
    reader = _open(src)
    fields = gguf_fields(reader)
    tensors = {t.name: t for t in reader.tensors}
    config = hf_config_from_gguf(fields, path, tensors)
    _, _, permuted = ARCHES[fields["general.architecture"]]
    target = canonical_dtype(dtype) if dtype is not None else None
    found: dict[str, int] = {}
    sources = []
    for name, tensor in tensors.items():
        if name == "rope_freqs.weight":
            continue
        hf = hf_name(name)
        if hf is None:
            raise GGUFError(f"{path}: tensor '{name}' has no Hugging Face counterpart in the "
                            f"'{fields['general.architecture']}' layout we read")
        from gguf import GGMLQuantizationType as T

        kind = T(tensor.tensor_type).name
        found[kind] = found.get(kind, 0) + 1
        stored = {"F16": "float16", "BF16": "bfloat16"}.get(kind, "float32")
        out = target or stored
        shape = tuple(int(d) for d in reversed(tensor.shape.tolist()))

        def load(t=tensor, hf=hf, stored_out=out):
            arr, kind_name = _dequantize(t, path)
            if permuted and (".q_proj." in hf or ".k_proj." in hf):
                heads = config["num_attention_heads"] if ".q_proj." in hf else config["num_key_value_heads"]
                arr = unpermute_qk(arr, heads)
            return np.ascontiguousarray(convert_storage(arr, kind_name, stored_out))

        sources.append(TensorSource(hf, out, shape, load))
    if target is not None or found.keys() - {"F16", "BF16"}:
        config["torch_dtype"] = target or "float32"
    else:
        config["torch_dtype"] = "float16" if "F16" in found else "bfloat16"
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = write_sharded(sources, dst, max_shard_size=max_shard_size)
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    generation = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if config.get(k) is not None}
    (dst / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n", encoding="utf-8")
    if "tokenizer.ggml.model" in fields:
        from .vocab import save_tokenizer_from_gguf

        save_tokenizer_from_gguf({**fields, "_context_length": config["max_position_embeddings"]}, dst, path)
    return {"architecture": fields["general.architecture"], "model_type": config["model_type"],
            "tensor_types": found, "files": files, "dtype": config["torch_dtype"],
            "tokenizer": fields.get("tokenizer.ggml.model"),
            "chat_template": bool(fields.get("tokenizer.chat_template"))}
