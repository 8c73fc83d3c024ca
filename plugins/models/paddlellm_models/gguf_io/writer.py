"""Hugging Face layout -> GGUF that llama.cpp loads (``f32``, ``f16``, ``bf16``, ``q8_0``,
``q4_0``, ``q4_1``).

The container is written with the ``gguf`` package's ``GGUFWriter`` in its streaming form:
every tensor's name, shape and type is declared first, then the tensors are read from the
checkpoint, renamed, Q/K-permuted (``llama`` architecture), quantized with ``gguf.quants``
and appended one at a time, so memory stays about one tensor. As llama.cpp's converter does,
1-D tensors (norms, biases) stay float32 and matrices whose rows are not a whole number of
quantization blocks fall back to float16 (f16/q* outputs) or float32.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from .arch import ARCHES, MODEL_TYPES, GGUFError, gguf_name, llama3_rope_factors, permute_qk

#: output type -> (GGML type name, llama_ftype recorded in general.file_type)
OUTTYPES = {"f32": ("F32", 0), "f16": ("F16", 1), "bf16": ("BF16", 32),
            "q8_0": ("Q8_0", 7), "q4_0": ("Q4_0", 2), "q4_1": ("Q4_1", 3)}


def _writer_module():
    try:
        import gguf
    except ImportError as exc:
        raise GGUFError(f"writing GGUF needs the 'gguf' package (pip install gguf): {exc}") from None
    return gguf


def _tensor_type(hf: str, shape: tuple[int, ...], outtype: str, gguf) -> Any:
    T = gguf.GGMLQuantizationType
    main = T[OUTTYPES[outtype][0]]
    if len(shape) == 1:
        return T.F32
    if main in (T.F32, T.F16, T.BF16):
        return main
    block = gguf.GGML_QUANT_SIZES[main][0]
    return main if shape[-1] % block == 0 else T.F16


def _encode(arr: np.ndarray, kind, gguf) -> np.ndarray:
    T = gguf.GGMLQuantizationType
    if kind == T.F32:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if kind == T.F16:
        return np.ascontiguousarray(arr, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), kind)


def hf_to_gguf(src: str | os.PathLike, dst: str | os.PathLike, *, outtype: str = "f16",
               name: str | None = None) -> dict[str, Any]:
    """Write the Hugging Face checkpoint directory ``src`` as the GGUF file ``dst``.

    Supported ``model_type``: llama, mistral (written as llama.cpp's ``llama``), qwen2, qwen3.
    The tokenizer (``tokenizer.json``, or ``tokenizer.model``) and chat template are stored
    as ``tokenizer.ggml.*`` / ``tokenizer.chat_template`` metadata. Returns a summary.
    """
    from paddlellm.api import CheckpointReader, read_json

    gguf = _writer_module()
    if outtype not in OUTTYPES:
        raise GGUFError(f"GGUF output type '{outtype}' is not supported (supported: {', '.join(OUTTYPES)})")
    src = Path(src)
    config_path = src / "config.json"
    hf = read_json(config_path)
    model_type = hf.get("model_type")
    if model_type not in MODEL_TYPES:
        raise GGUFError(f"{config_path}: model_type '{model_type}' cannot be written as GGUF "
                        f"(supported: {', '.join(MODEL_TYPES)})")
    arch = MODEL_TYPES[model_type]
    permuted = ARCHES[arch][2]
    if hf.get("sliding_window") and hf.get("use_sliding_window", model_type == "mistral") \
            and hf["sliding_window"] < hf.get("max_position_embeddings", 0):
        import warnings

        warnings.warn(f"{config_path}: sliding_window {hf['sliding_window']} is dropped: llama.cpp's "
                      f"'{arch}' architecture attends to the whole context (as its own converter "
                      "does for Mistral); outputs differ beyond that many tokens", stacklevel=2)
    heads = int(hf["num_attention_heads"])
    kv_heads = int(hf.get("num_key_value_heads") or heads)
    hidden = int(hf["hidden_size"])
    head_dim = int(hf.get("head_dim") or hidden // heads)
    rope = hf.get("rope_scaling") or hf.get("rope_parameters") or {}
    theta = float(hf.get("rope_theta") or rope.get("rope_theta") or 10000.0)
    rope_type = rope.get("rope_type", rope.get("type", "default")) if rope else "default"
    if rope_type not in ("default", "linear", "llama3", "yarn"):
        raise GGUFError(f"{config_path}: rope type '{rope_type}' cannot be written as GGUF "
                        "(default, linear, llama3, yarn can)")

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(dst), arch)
    w.add_name(name or src.resolve().name)
    w.add_file_type(OUTTYPES[outtype][1])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_context_length(int(hf.get("max_position_embeddings", 2048)))
    w.add_embedding_length(hidden)
    w.add_block_count(int(hf["num_hidden_layers"]))
    w.add_feed_forward_length(int(hf["intermediate_size"]))
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(theta)
    w.add_layer_norm_rms_eps(float(hf.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(int(hf["vocab_size"]))
    if rope_type in ("linear", "yarn"):
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR if rope_type == "linear" else gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(float(rope["factor"]))
        if rope_type == "yarn":
            w.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings",
                                                         hf.get("max_position_embeddings", 2048))))
    if (src / "tokenizer.json").is_file() or (src / "tokenizer.model").is_file():
        from .vocab import gguf_tokenizer_fields

        adders = {"str": w.add_string, "u32": w.add_uint32, "bool": w.add_bool,
                  "[str]": w.add_array, "[f32]": w.add_array, "[i32]": w.add_array}
        for key, (kind, value) in gguf_tokenizer_fields(src, int(hf["vocab_size"])).items():
            adders[kind](key, value)

    types: dict[str, int] = {}
    with CheckpointReader(src) as reader:
        plan = []
        tied = bool(hf.get("tie_word_embeddings", False))
        for hf_tensor in reader.keys():
            if hf_tensor.endswith("rotary_emb.inv_freq") or (tied and hf_tensor == "lm_head.weight"):
                continue
            target = gguf_name(hf_tensor)
            if target is None:
                raise GGUFError(f"{src}: tensor '{hf_tensor}' has no place in llama.cpp's '{arch}' layout")
            shape = tuple(reader.shape(hf_tensor))
            kind = _tensor_type(hf_tensor, shape, outtype, gguf)
            types[kind.name] = types.get(kind.name, 0) + 1
            plan.append((hf_tensor, target, shape, kind))
        extra = None
        if rope_type == "llama3":
            extra = llama3_rope_factors(head_dim, theta, rope)
            w.add_tensor_info("rope_freqs.weight", extra.shape, np.dtype(np.float32), extra.nbytes)
        for _, target, shape, kind in plan:
            nbytes = gguf.quant_shape_to_byte_shape(shape, kind) if kind not in (
                gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16) else shape
            itemsize = {gguf.GGMLQuantizationType.F32: 4, gguf.GGMLQuantizationType.F16: 2}.get(kind, 1)
            size = int(np.prod(nbytes)) * itemsize
            dtype = {gguf.GGMLQuantizationType.F32: np.float32,
                     gguf.GGMLQuantizationType.F16: np.float16}.get(kind, np.uint8)
            w.add_tensor_info(target, shape if dtype is not np.uint8 else nbytes, np.dtype(dtype), size,
                              raw_dtype=None if dtype is not np.uint8 else kind)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        if extra is not None:
            w.write_tensor_data(extra)
        for hf_tensor, _, _, kind in plan:
            arr = reader.get_numpy(hf_tensor, "float32")
            if permuted and (".q_proj." in hf_tensor or ".k_proj." in hf_tensor):
                arr = permute_qk(arr, heads if ".q_proj." in hf_tensor else kv_heads)
            w.write_tensor_data(_encode(arr, kind, gguf))
            del arr
    w.close()
    return {"architecture": arch, "outtype": outtype, "tensor_types": types, "file": str(dst),
            "bytes": dst.stat().st_size}
