"""Tokenizers in Hugging Face layout: ``tokenizer.json`` through the ``tokenizers`` library,
special tokens from ``tokenizer_config.json``, chat templates with transformers' Jinja semantics,
streaming detokenization, and training of a small Qwen2-style byte-level BPE.

Importing this package does not import Paddle.
"""
from __future__ import annotations

from .chat_template import ChatTemplateError, compile_chat_template, render_chat_template
from .template_limits import RenderLimits, TemplateLimitError, render_limits
from .incremental import IncrementalDetokenizer
from .tokenizer import SPECIAL_TOKEN_NAMES, TOKENIZER_FILES, AutoTokenizer, Tokenizer
from .training import QWEN_CHAT_TEMPLATE, train_bpe_tokenizer

__all__ = [
    "AutoTokenizer",
    "ChatTemplateError",
    "IncrementalDetokenizer",
    "QWEN_CHAT_TEMPLATE",
    "RenderLimits",
    "SPECIAL_TOKEN_NAMES",
    "TOKENIZER_FILES",
    "TemplateLimitError",
    "Tokenizer",
    "compile_chat_template",
    "render_chat_template",
    "render_limits",
    "train_bpe_tokenizer",
]
