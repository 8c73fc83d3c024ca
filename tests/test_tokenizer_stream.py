"""Streaming detokenization, save/load round trips and BPE training."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from paddlellm.tokenizer import AutoTokenizer, IncrementalDetokenizer, Tokenizer, train_bpe_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
NAMES = ["qwen2", "llama3", "llama2", "gemma", "wordlevel", "ours"]
STREAM_TEXT = "Hé 東京 🎉👨‍👩‍👧 naïve 𝔘𝔫𝔦 — “ok”\n  end 🇫🇷. Hello world, I'm fine ! you're here ? it's ok"
MESSAGES = [{"role": "user", "content": "東京 🎉?"}, {"role": "assistant", "content": "Oui — 👍🏽 café"}]


def _stream(tok, ids, **kwargs) -> tuple[str, list[str]]:
    detok = IncrementalDetokenizer(tok, **kwargs)
    pieces = [detok.push(i) for i in ids]
    pieces.append(detok.flush())
    assert "".join(pieces) == detok.text
    return detok.text, pieces


@pytest.fixture(scope="module", params=NAMES)
def tok(request):
    return AutoTokenizer.from_pretrained(FIXTURES / request.param)


def test_stream_equals_full_decode(tok):
    ids = tok.encode(STREAM_TEXT)
    for skip in (True, False):
        text, pieces = _stream(tok, ids, skip_special_tokens=skip)
        assert text == tok.decode(ids, skip_special_tokens=skip)
        assert not any("\ufffd" in p for p in pieces)  # never emits half a character
    # Special tokens in the middle of the stream (the chat template's control tokens).
    ids = tok.apply_chat_template(MESSAGES, chat_template=None if tok.chat_template else
                                  "{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}")
    for skip in (True, False):
        assert _stream(tok, ids, skip_special_tokens=skip)[0] == tok.decode(ids, skip_special_tokens=skip)


@pytest.mark.parametrize("name", ["llama2", "gemma"])
def test_stream_skips_specials_between_sentencepiece_words(name):
    # "▁Hello </s> ▁world": the skipped token must not make "▁world" start a window (losing its space).
    tok = AutoTokenizer.from_pretrained(FIXTURES / name)
    ids = tok.encode("Hello", add_special_tokens=False) + [tok.eos_token_id] * 2
    ids += tok.encode("world again", add_special_tokens=False)
    assert tok.convert_ids_to_tokens(ids[-3])[0] == "▁"
    for skip in (True, False):
        assert _stream(tok, ids, skip_special_tokens=skip)[0] == tok.decode(ids, skip_special_tokens=skip)


def test_stream_holds_back_split_characters():
    tok = AutoTokenizer.from_pretrained(FIXTURES / "qwen2")
    ids = tok.encode("🎉")  # not in the tiny vocabulary: several byte tokens
    assert len(ids) > 1
    _, pieces = _stream(tok, ids)
    assert pieces == [""] * (len(ids) - 1) + ["🎉", ""]  # held until the last byte, then emitted whole


def test_stream_random_cuts_and_prompt_context(tok):
    rng = random.Random(0)
    full = tok.encode(STREAM_TEXT + " Hello world, bonjour 你好!", add_special_tokens=False)
    for _ in range(5):
        cut = rng.randrange(1, len(full))
        prompt, generated = full[:cut], full[cut:]
        prompt_text = tok.decode(prompt, skip_special_tokens=True)
        whole = tok.decode(prompt + generated, skip_special_tokens=True)
        text, _ = _stream(tok, generated, prompt_ids=prompt)
        if whole.startswith(prompt_text):  # the prompt ends on a character boundary
            assert text == whole[len(prompt_text):]


def test_incomplete_tail_is_flushed():
    tok = AutoTokenizer.from_pretrained(FIXTURES / "llama2")
    ids = tok.encode("a✨", add_special_tokens=False)[:-1]  # cut inside the byte-fallback tokens of ✨
    text, _ = _stream(tok, ids)
    assert text == tok.decode(ids) and text.endswith("\ufffd")


@pytest.mark.parametrize("name", NAMES)
def test_save_pretrained_round_trip(name, tmp_path):
    original = Tokenizer.from_pretrained(FIXTURES / name)
    files = original.save_pretrained(tmp_path)
    assert {Path(f).name for f in files} == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["chat_template"] is not None
    reloaded = Tokenizer.from_pretrained(tmp_path)
    expected = json.loads((FIXTURES / name / "expected.json").read_text(encoding="utf-8"))
    assert reloaded.special_tokens_map == expected["special_tokens_map"]
    assert reloaded.all_special_ids == expected["all_special_ids"]
    assert (len(reloaded), reloaded.padding_side, reloaded.model_max_length) == (
        expected["len"], expected["padding_side"], expected["model_max_length"])
    assert reloaded.chat_template == original.chat_template
    for item in expected["encode"]:
        assert reloaded.encode(item["text"]) == item["ids"]
    for case, entry in expected["chat"].items():
        if "text" in entry:
            assert reloaded.apply_chat_template(entry["conversation"], tokenize=False, **entry["kwargs"]) == entry["text"]


def test_setting_a_pad_token():
    tok = Tokenizer.from_pretrained(FIXTURES / "llama3")
    assert tok.pad_token is None
    tok.pad_token = tok.eos_token
    assert tok.pad_token_id == tok.eos_token_id
    out = tok(["a", "a longer text"], padding=True)
    assert out["input_ids"][0][0] == tok.eos_token_id  # llama3 fixture pads on the left
    assert out["attention_mask"][0][0] == 0
    tok.set_special_token("sep_token", "<|brand_new|>")
    assert tok.sep_token_id == len(tok) - 1 and "<|brand_new|>" in tok.all_special_tokens


def test_train_bpe_tokenizer(tmp_path):
    corpus = ["The cat sat on the mat. 猫がマットの上に座った。 🐱"] * 30 + ["Numbers 12345 and code x = y + 1"] * 30
    tok = train_bpe_tokenizer(corpus, 320, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    assert len(tok) <= 320 and tok.vocab_size > 256
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>" and tok.bos_token is None
    assert tok.convert_ids_to_tokens(len(tok) - 3) == "<|endoftext|>"  # specials after the learned vocabulary
    for text in corpus[:1] + ["unseen 文字 ✨ text\n\twith tabs", "<|im_start|>user\nhi<|im_end|>"]:
        assert tok.decode(tok.encode(text)) == text  # byte-level: lossless on any text
    assert len(tok.encode("The cat sat on the mat.")) < len("The cat sat on the mat.")  # merges were learned
    assert tok.encode("<|im_start|>")[0] == tok.convert_tokens_to_ids("<|im_start|>")
    rendered = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="at least 259"):
        train_bpe_tokenizer(corpus, 100, tmp_path / "small")


def test_importing_the_tokenizer_does_not_import_paddle():
    import subprocess
    import sys

    code = "import sys, paddlellm.tokenizer; print('paddle' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_pickle_round_trip():
    import pickle

    tok = AutoTokenizer.from_pretrained(FIXTURES / "llama2")
    clone = pickle.loads(pickle.dumps(tok))
    assert clone.encode(STREAM_TEXT) == tok.encode(STREAM_TEXT)
    assert clone.special_tokens_map == tok.special_tokens_map and clone.chat_template == tok.chat_template
    assert clone(["a", "bb cc"], padding=True) == tok(["a", "bb cc"], padding=True)
