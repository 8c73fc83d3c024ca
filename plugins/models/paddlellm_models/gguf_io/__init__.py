"""GGUF in and out: ``llm convert model.gguf out_dir`` and ``llm convert hf_dir model.gguf``.

:func:`gguf_to_hf` reads llama.cpp's files (f32/f16/bf16, q8_0, q4_0/q4_1, q5_0/q5_1 and the
k-quants q2_K..q6_K, dequantized; tokenizer and chat template from the metadata) into the
Hugging Face layout; :func:`hf_to_gguf` writes GGUF (f32, f16, bf16, q8_0, q4_0, q4_1) that
llama.cpp loads. Architectures: llama (and Mistral, which llama.cpp stores as llama), qwen2,
qwen3. The container format is the ``gguf`` package's (llama.cpp's gguf-py); the tensor
renaming, the Q/K row permutation and the tokenizer mapping are ours (:mod:`.arch`,
:mod:`.vocab`). Importing this package imports neither Paddle nor ``gguf``.
"""
from __future__ import annotations

from .arch import ARCHES, MODEL_TYPES, GGUFError, permute_qk, unpermute_qk
from .reader import READABLE, gguf_to_hf, is_gguf
from .writer import OUTTYPES, hf_to_gguf

__all__ = ["ARCHES", "MODEL_TYPES", "GGUFError", "OUTTYPES", "READABLE", "gguf_to_hf", "hf_to_gguf",
           "is_gguf", "permute_qk", "unpermute_qk"]
