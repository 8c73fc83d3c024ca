"""SFT data: record formats, response-only labels, errors by file and line, packing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from paddlellm.data.sft import (IGNORE_INDEX, Example, pack_examples, packed_batch, pad_batch,
                                padding_ratio, read_sft_jsonl, record_to_messages,
                                tokenize_all, tokenize_conversation)
from paddlellm.errors import DataFormatError
from paddlellm.tokenizer import AutoTokenizer

TOK_DIR = Path(__file__).parent / "fixtures" / "tokenizer" / "ours"


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TOK_DIR)


def test_record_formats_become_messages():
    assert record_to_messages({"src": "hi", "tgt": "yo"}, "f:1") == [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    multi = record_to_messages({"src": ["a", "b"], "tgt": ["1", "2"], "system": "s"}, "f:1")
    assert [m["role"] for m in multi] == ["system", "user", "assistant", "user", "assistant"]
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert record_to_messages({"messages": msgs}, "f:1") == msgs


@pytest.mark.parametrize("line, message", [
    ('{"src": "a"}', "expected 'src' and 'tgt'"),
    ('{"src": ["a"], "tgt": ["b", "c"]}', "'src' has 1 turns but 'tgt' has 2"),
    ('{"src": "a", "tgt": 3}', "must both be strings or both lists"),
    ('{"messages": [{"role": "user", "content": "q"}]}', "no assistant message"),
    ('{"messages": [{"role": "robot", "content": "q"}]}', "messages[0] must be"),
    ('{"src": "a", "tgt": ', "not valid JSON"),
    ('[1, 2]', "expected a JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "train.jsonl"
    path.write_text('{"src": "ok", "tgt": "fine"}\n\n' + line + "\n")
    with pytest.raises(DataFormatError) as info:
        read_sft_jsonl(path)
    assert f"{path}:3:" in str(info.value) and message in str(info.value)


def test_labels_cover_exactly_the_assistant_turns(tok):
    messages = record_to_messages({"src": ["What is 2 + 2?", "And 3 + 3?"], "tgt": ["4", "6"]}, "x")
    ex = tokenize_conversation(tok, messages)
    full = tok.apply_chat_template(messages, tokenize=True)
    assert ex.input_ids == list(full)
    trained = [t for t, label in zip(ex.input_ids, ex.labels) if label != IGNORE_INDEX]
    assert tok.decode(trained) == "4<|im_end|>\n6<|im_end|>\n"
    # the prompt side, system prompt included, carries no loss
    assert ex.labels[:5] == [IGNORE_INDEX] * 5


def test_plain_src_tgt_without_a_chat_template(tok):
    plain = AutoTokenizer.from_pretrained(TOK_DIR, chat_template=None)
    plain.chat_template = None
    ex = tokenize_conversation(plain, [{"role": "user", "content": "ab"},
                                       {"role": "assistant", "content": "cd"}])
    src = plain.encode("ab", add_special_tokens=True)
    tgt = plain.encode("cd", add_special_tokens=False) + [plain.eos_token_id]
    assert ex.input_ids == src + tgt and ex.labels == [IGNORE_INDEX] * len(src) + tgt


def test_truncation_drops_examples_without_targets(tok):
    short = record_to_messages({"src": "q", "tgt": "a"}, "x")
    limit = len(tokenize_conversation(tok, short)) + 2
    convs = [record_to_messages({"src": "x " * 80, "tgt": "y"}, "x"), short]
    examples, dropped = tokenize_all(tok, convs, max_length=limit)
    assert dropped == 1 and len(examples) == 1 and len(examples[0]) == limit - 2


def test_packing_is_first_fit_and_restarts_positions():
    exs = [Example([1, 2, 3], [-100, 2, 3]), Example([4, 5], [-100, 5]),
           Example([6, 7, 8, 9], [-100, 7, 8, 9]), Example([10], [-100])]
    bins = pack_examples(exs, 5)
    assert [[e.input_ids for e in b] for b in bins] == [[[1, 2, 3], [4, 5]], [[6, 7, 8, 9], [10]]]
    batch = packed_batch(bins, pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]]
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1], [0, 0, 0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert batch["labels"][0].tolist() == [-100, 2, 3, -100, 5]
    padded = pad_batch(exs, pad_id=0)
    assert padded["attention_mask"].sum() == 10 and padded["input_ids"].shape == (4, 4)
    assert padding_ratio([batch]) == 0.0 and padding_ratio([padded]) == pytest.approx(6 / 16)
