"""Parity of ``paddlellm.tokenizer`` with ``transformers`` on the fixtures recorded by
``scripts/fixtures/make_tokenizer_fixtures.py`` (byte-level BPE like Qwen2 and Llama 3,
SentencePiece-style BPE like Llama 2 and Gemma, and a tokenizer saved by our own trainer)."""
from __future__ import annotations

import json
from pathlib import Path

import jinja2
import numpy as np
import pytest

from paddlellm.tokenizer import AutoTokenizer, Tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
NAMES = ["qwen2", "llama3", "llama2", "gemma", "wordlevel", "ours"]


def _expected(name: str) -> dict:
    return json.loads((FIXTURES / name / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    name = request.param
    return name, AutoTokenizer.from_pretrained(FIXTURES / name), _expected(name)


def test_attributes(case):
    name, tok, exp = case
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == exp["vocab_size"]
    assert len(tok) == exp["len"]
    assert tok.special_tokens_map == exp["special_tokens_map"]
    assert tok.all_special_tokens == exp["all_special_tokens"]
    assert tok.all_special_ids == exp["all_special_ids"]
    for key, value in exp["ids"].items():
        assert getattr(tok, f"{key}_token_id") == value, key
    assert tok.padding_side == exp["padding_side"]
    assert tok.model_max_length == exp["model_max_length"]


def test_encode_decode(case):
    name, tok, exp = case
    for item in exp["encode"]:
        text = item["text"]
        assert tok(text)["input_ids"] == item["ids"], text
        assert tok.encode(text) == item["ids"], text
        assert tok(text, add_special_tokens=False)["input_ids"] == item["ids_no_special"], text
        assert tok(text)["attention_mask"] == [1] * len(item["ids"])
        assert tok.convert_ids_to_tokens(item["ids"]) == item["tokens"], text
        assert tok.convert_ids_to_tokens(item["ids"], skip_special_tokens=True) == item["tokens_skip"], text
        assert tok.convert_tokens_to_ids(item["tokens"]) == item["ids"], text
        assert tok.decode(item["ids"]) == item["decode"], text
        assert tok.decode(item["ids"], skip_special_tokens=True) == item["decode_skip"], text
    all_ids = [item["ids"] for item in exp["encode"]]
    assert tok.batch_decode(all_ids, skip_special_tokens=True) == [item["decode_skip"] for item in exp["encode"]]
    assert tok.decode(np.asarray(all_ids[0])) == exp["encode"][0]["decode"]


def test_add_bos_eos_overrides(case):
    name, _, exp = case
    for item in exp["bos_eos_overrides"]:
        tok = Tokenizer.from_pretrained(FIXTURES / name, **item["kwargs"])
        assert tok.encode(exp["encode"][0]["text"]) == item["ids"], item["kwargs"]


def test_padding_and_truncation(case):
    name, tok, exp = case
    texts = exp["batch"]["texts"]
    for case_name, item in exp["batch"]["cases"].items():
        runner = tok
        if "padding_side" in item:
            runner = Tokenizer.from_pretrained(FIXTURES / name, padding_side=item["padding_side"])
        out = runner(texts, **item["kwargs"])
        assert out["input_ids"] == item["input_ids"], case_name
        assert out["attention_mask"] == item["attention_mask"], case_name
    if "pad_error" in exp:
        with pytest.raises(ValueError, match="does not have a padding token"):
            tok(texts, padding=True)


def test_return_tensors(case):
    name, tok, exp = case
    texts = exp["batch"]["texts"]
    if tok.pad_token is None:
        tok = Tokenizer.from_pretrained(FIXTURES / name, pad_token=tok.eos_token)
    out = tok(texts, padding=True, return_tensors="np")
    assert out["input_ids"].dtype == np.int64 and out["input_ids"].shape == out["attention_mask"].shape
    assert out["input_ids"].shape[0] == len(texts)
    single = tok(texts[0], return_tensors="np")["input_ids"]
    assert single.shape == (1, len(tok.encode(texts[0])))
    with pytest.raises(ValueError, match="different lengths"):
        tok(texts, return_tensors="np")


def test_chat_templates(case):
    name, tok, exp = case
    for case_name, item in exp["chat"].items():
        kwargs = dict(item["kwargs"])
        if "error" in item:
            with pytest.raises(jinja2.TemplateError, match=item["error"]["message"].replace(".", r"\.")):
                tok.apply_chat_template(item["conversation"], tokenize=False, **kwargs)
            continue
        text = tok.apply_chat_template(item["conversation"], tokenize=False, **kwargs)
        assert text == item["text"], case_name
        assert tok.apply_chat_template(item["conversation"], **kwargs) == item["ids"], case_name
        out = tok.apply_chat_template(item["conversation"], return_dict=True, **kwargs)
        assert out["input_ids"] == item["ids"], case_name


def test_chat_template_files_and_config():
    # llama3 keeps its templates in chat_template.jinja + additional_chat_templates/; tools pick "tool_use".
    tok = AutoTokenizer.from_pretrained(FIXTURES / "llama3")
    assert set(tok.chat_template) == {"default", "tool_use"}
    assert "Environment: ipython" in tok.get_chat_template(tools=[{}])
    assert tok.get_chat_template() == tok.chat_template["default"]
    # qwen2 keeps its template inside tokenizer_config.json
    assert "<|im_start|>" in AutoTokenizer.from_pretrained(FIXTURES / "qwen2").chat_template


def test_overrides_and_errors(tmp_path):
    tok = Tokenizer.from_pretrained(FIXTURES / "qwen2", padding_side="left", model_max_length=7)
    assert tok.padding_side == "left" and tok.model_max_length == 7
    assert len(tok("a b c d e f g h i j k", truncation=True)["input_ids"]) == 7
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_pretrained(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="No tokenizer.json"):
        Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="chat_template is not set"):
        Tokenizer.from_pretrained(FIXTURES / "qwen2", chat_template=None).apply_chat_template(
            [{"role": "user", "content": "hi"}])
    with pytest.raises(ValueError, match="empty conversation"):
        tok.apply_chat_template([])
    with pytest.raises(ValueError, match="not compatible"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                continue_final_message=True)
    with pytest.raises(ValueError, match="padding must be"):
        tok("x", padding="sideways")


def test_return_paddle_tensors():
    paddle = pytest.importorskip("paddle")
    tok = AutoTokenizer.from_pretrained(FIXTURES / "qwen2")
    exp = _expected("qwen2")["batch"]
    out = tok(exp["texts"], padding=True, return_tensors="pd")
    assert isinstance(out["input_ids"], paddle.Tensor) and out["input_ids"].dtype == paddle.int64
    assert out["input_ids"].numpy().tolist() == exp["cases"]["longest"]["input_ids"]
    assert out["attention_mask"].numpy().tolist() == exp["cases"]["longest"]["attention_mask"]
    assert tok.decode(out["input_ids"][0], skip_special_tokens=True) == exp["texts"][0]


def test_template_sources(tmp_path):
    import shutil

    source = FIXTURES / "qwen2"
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = config.pop("chat_template")
    shutil.copy(source / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).chat_template is None
    # legacy processor file chat_template.json
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}), encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).chat_template == template
    # a list of named templates in tokenizer_config.json
    config["chat_template"] = [{"name": "default", "template": "D{{ messages[0].content }}"},
                               {"name": "rag", "template": "R{{ documents | length }}"}]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    tok = Tokenizer.from_pretrained(tmp_path)
    messages = [{"role": "user", "content": "q"}]
    assert tok.apply_chat_template(messages, tokenize=False) == "Dq"
    assert tok.apply_chat_template(messages, tokenize=False, chat_template="rag", documents=[{}]) == "R1"
    # chat_template.jinja wins over the config
    (tmp_path / "chat_template.jinja").write_text("J", encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).chat_template == "J"
