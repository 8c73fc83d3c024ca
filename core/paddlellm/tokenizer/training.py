"""Train a small byte-level BPE tokenizer shaped like Qwen2's and save it in Hugging Face layout."""
from __future__ import annotations

import os
from typing import Iterable, Sequence

from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _Backend

from .tokenizer import Tokenizer

__all__ = ["QWEN_CHAT_TEMPLATE", "QWEN_PRETOKENIZE_PATTERN", "train_bpe_tokenizer"]

# Qwen2's pre-tokenisation split (GPT-4-like: single digits, letters with one leading non-letter).
QWEN_PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# ChatML with function calling, as in Qwen2.5-Instruct (default system prompt made generic).
QWEN_CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def _byte_level_bpe() -> _Backend:
    backend = _Backend(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PRETOKENIZE_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    return backend


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    directory: str | os.PathLike,
    *,
    special_tokens: Sequence[str] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    chat_template: str | None = QWEN_CHAT_TEMPLATE,
    model_max_length: int = 32768,
    min_frequency: int = 2,
) -> Tokenizer:
    """Train a byte-level BPE (Qwen2 layout) on ``texts`` and save it to ``directory``.

    ``vocab_size`` counts the special tokens, which get the ids after the learned vocabulary
    (the 256 byte symbols always come first, so any text encodes); a small corpus may learn
    fewer merges than asked. The first special token pads; ``<|im_end|>`` (when present, else
    the first special token) is the end-of-sequence token, as in Qwen2-Instruct.
    """
    special_tokens = list(special_tokens)
    base_size = vocab_size - len(special_tokens)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if base_size < len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(alphabet) + len(special_tokens)} (256 bytes + specials)")
    backend = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=base_size, min_frequency=min_frequency, special_tokens=[], initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special_tokens])
    eos = "<|im_end|>" if "<|im_end|>" in special_tokens else (special_tokens[0] if special_tokens else None)
    config = {
        "add_prefix_space": False,
        "bos_token": None,
        "eos_token": eos,
        "pad_token": special_tokens[0] if special_tokens else None,
        "unk_token": None,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": False,
        "errors": "replace",
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    Tokenizer(backend, config).save_pretrained(directory)
    return Tokenizer.from_pretrained(directory)
