"""Checkpoints that ship only a SentencePiece ``tokenizer.model``: ids, tokens and decoded text
equal to ``transformers.AutoTokenizer`` (recorded by scripts/fixtures/make_spm_fixtures.py;
Yuan's convention through transformers' LlamaTokenizer, Baichuan's, ChatGLM2/3's and ChatGLM-6B's
through references of their published tokenization_*.py), and the streaming detokenizer on
byte-fallback pieces."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from paddlellm.tokenizer import AutoTokenizer
from paddlellm.tokenizer.incremental import IncrementalDetokenizer
from paddlellm.tokenizer.sentencepiece import SentencePieceError, read_sentencepiece_model

FIXTURES = Path(__file__).parent / "fixtures" / "spm"
NAMES = ["llama2", "llama2_legacy", "bpe_spm", "unigram", "yuan", "baichuan", "baichuan_bos", "chatglm2", "chatglm3",
         "chatglm", "chatglm_noimg"]


def expected(name: str) -> dict:
    return json.loads((FIXTURES / name / "expected.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    return request.param, AutoTokenizer.from_pretrained(FIXTURES / request.param), expected(request.param)


def test_ids_tokens_and_text_equal_transformers(case):
    name, tok, want = case
    assert not (FIXTURES / name / "tokenizer.json").exists()
    assert (tok.vocab_size, len(tok)) == (want["vocab_size"], want["len"])
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == (want["bos_token"], want["eos_token"], want["unk_token"])
    for row in want["rows"]:
        text = row["text"]
        assert tok.encode(text) == row["ids"], text
        assert tok.encode(text, add_special_tokens=False) == row["ids_no_special"], text
        assert tok.convert_ids_to_tokens(row["ids_no_special"]) == row["tokens"], text
        assert tok.decode(row["ids"]) == row["decoded"], text
        assert tok.decode(row["ids"], skip_special_tokens=True) == row["decoded_skip"], text


def test_the_corpus_covers_what_it_should():
    rows = {r["text"]: r for r in expected("llama2")["rows"]}
    tokens = [t for r in rows.values() for t in r["tokens"]]
    assert any(t.startswith("<0x") for t in tokens)  # byte-fallback pieces (emoji, rare CJK)
    assert rows["special<s>glued</s>tokens"]["ids_no_special"].count(1) == 1  # <s> matched in text
    assert expected("llama2")["rows"][0]["ids"][0] == 1 and expected("llama2_legacy")["rows"][0]["ids"][0] != 1
    # the generic conversion tokenises like SentencePiece itself wherever transformers does
    for name in ("bpe_spm", "unigram"):
        same = [r for r in expected(name)["rows"] if not any(t in r["text"] for t in ("<s>", "</s>", "<unk>"))]
        assert all(r["ids_no_special"] == r["spm_ids"] for r in same), name


def test_yuan_and_baichuan_conventions():
    """Yuan: no BOS/EOS added, <eod> is the eos, <sep>/<pad>/... (pieces of its model) are whole
    special tokens, <n> a plain piece; Baichuan: the published configs add no BOS (Baichuan-7B's
    class default adds one), special tokens split the text and each chunk is encoded on its own."""
    yuan = AutoTokenizer.from_pretrained(FIXTURES / "yuan")
    rows = {r["text"]: r for r in expected("yuan")["rows"]}
    sep, eod = yuan.convert_tokens_to_ids("<sep>"), yuan.convert_tokens_to_ids("<eod>")
    assert yuan.eos_token == "<eod>" and yuan.eos_token_id == eod
    assert rows["你好<sep>"]["ids"][-1] == sep and rows["你好<sep>"]["ids"] == rows["你好<sep>"]["ids_no_special"]
    assert rows["answer ends<eod>"]["ids"][-1] == eod
    assert yuan.convert_tokens_to_ids("<n>") in rows["第一问<n>第一答<n>第二问<sep>"]["ids"]
    assert yuan.decode(rows["你好<sep>"]["ids"], skip_special_tokens=True) == "你好"
    plain = {r["text"]: r for r in expected("baichuan")["rows"]}
    bos = {r["text"]: r for r in expected("baichuan_bos")["rows"]}
    assert plain["Hello world"]["ids"] == plain["Hello world"]["ids_no_special"]
    assert bos["Hello world"]["ids"] == [1] + plain["Hello world"]["ids"]
    assert plain["special<s>glued</s>tokens"]["decoded"] == " special<s> glued</s>tokens"  # the published order


@pytest.mark.parametrize("name", ["llama2", "unigram", "yuan", "baichuan", "chatglm2", "chatglm3", "chatglm"])
def test_streaming_detokenizer_handles_byte_fallback_and_metaspace(name):
    tok = AutoTokenizer.from_pretrained(FIXTURES / name)
    for row in expected(name)["rows"]:
        ids = row["ids"]
        stream = IncrementalDetokenizer(tok, skip_special_tokens=True)
        pieces = [stream.push(i) for i in ids] + [stream.flush()]
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=True), row["text"]
        assert all("\ufffd" not in p for p in pieces[:-1]) or "\ufffd" in row["decoded"], row["text"]
    # a generated continuation after a prompt keeps its leading space (▁ pieces)
    prompt, gen = tok.encode("Hello"), tok.encode(" world today", add_special_tokens=False)
    stream = IncrementalDetokenizer(tok, prompt_ids=prompt)
    text = "".join(stream.push(i) for i in gen) + stream.flush()
    full = tok.decode(prompt + gen, skip_special_tokens=True)
    assert text == full[len(tok.decode(prompt, skip_special_tokens=True)):]


def test_save_pretrained_writes_a_fast_tokenizer_that_loads_the_same(tmp_path):
    tok = AutoTokenizer.from_pretrained(FIXTURES / "llama2")
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    for row in expected("llama2")["rows"]:
        assert again.encode(row["text"]) == row["ids"], row["text"]


def test_bad_model_files_are_named(tmp_path):
    shutil.copy(FIXTURES / "llama2" / "tokenizer_config.json", tmp_path)
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a\xff\xff\xff")
    with pytest.raises(SentencePieceError, match=r"tokenizer.model: not a SentencePiece model"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer.model").unlink()
    with pytest.raises(FileNotFoundError, match="No tokenizer.json or tokenizer.model"):
        AutoTokenizer.from_pretrained(tmp_path)
    model = read_sentencepiece_model(FIXTURES / "unigram" / "tokenizer.model")
    assert model.model_type == 1 and model.precompiled_charsmap and not model.byte_fallback
    assert (model.unk_id, model.bos_id, model.eos_id, model.pad_id) == (0, 1, 2, -1)


@pytest.mark.parametrize("name", ["llama2", "chatglm_noimg", "chatglm3"])
def test_engine_loads_a_sentencepiece_checkpoint_and_streams_its_text(tmp_path, name):
    """A checkpoint whose folder has only tokenizer.model (ChatGLM-6B's: ice_text.model): the
    engine loads the tokenizer and its streamed text (byte-fallback pieces, ChatGLM's marks
    included) equals decode."""
    import paddle

    from paddlellm import AutoModelForCausalLM
    from paddlellm.engine import LLMEngine, SamplingParams

    paddle.seed(0)
    model = AutoModelForCausalLM.from_config("llama-tiny", vocab_size=expected(name)["len"])
    model.save_pretrained(str(tmp_path))
    for f in ("tokenizer.model", "ice_text.model", "tokenizer_config.json"):
        if (FIXTURES / name / f).is_file():
            shutil.copy(FIXTURES / name / f, tmp_path)
    engine = LLMEngine.from_pretrained(str(tmp_path), block_size=4, num_blocks=64)
    assert engine.tokenizer is not None
    tok = engine.tokenizer
    prompt = tok.encode("Emoji: 😀 and 今天")
    params = SamplingParams(temperature=0, ignore_eos=True, max_tokens=24)
    (result,) = engine.generate([prompt], params)
    assert result["text"] == tok.decode(prompt + result["token_ids"], skip_special_tokens=True)[
        len(tok.decode(prompt, skip_special_tokens=True)):]


def test_chatglm2_and_chatglm3_conventions():
    """ChatGLM2/3 (their tokenization_chatglm.py): the appended tokens numbered after the pieces,
    [gMASK] sop prepended, a pair ends with EOS, nothing in text matched as a special token, pad =
    unk on the left; decode drops BOS/EOS/pad, ChatGLM2 drops the appended tokens, ChatGLM3
    writes their names."""
    for name in ("chatglm2", "chatglm3"):
        tok, want = AutoTokenizer.from_pretrained(FIXTURES / name), expected(name)
        assert [[t, tok.convert_tokens_to_ids(t)] for t, _ in want["appended"]] == want["appended"]
        assert [tok.convert_ids_to_tokens(i) for _, i in want["appended"]] == [t for t, _ in want["appended"]]
        gmask, sop = tok.convert_tokens_to_ids("[gMASK]"), tok.convert_tokens_to_ids("sop")
        assert gmask == tok.vocab_size - len(want["appended"]) + 1
        assert (tok.eos_token_id, tok.pad_token_id) == (want["eos_token_id"], want["pad_token_id"])
        assert tok.padding_side == "left"
        rows = {r["text"]: r for r in want["rows"]}
        written = rows["[gMASK]sop written in text"]
        assert written["ids"][:2] == [gmask, sop] and gmask not in written["ids_no_special"]
        assert tok.encode("[gMASK]sop written in text")[2:] == written["ids_no_special"]
        assert tok.backend_tokenizer.encode("Hello", "world").ids == want["pair"]
        batch = tok(["Hello world", "a"], padding=True)
        short = batch["input_ids"][1]
        assert short[0] == tok.pad_token_id and batch["attention_mask"][1][0] == 0 and short[-3:-1] == [gmask, sop]
        hello = rows["Hello world"]["ids"]
        assert tok.decode(hello + [tok.eos_token_id, tok.pad_token_id]) == rows["Hello world"]["decoded"]
        assert tok.decode(hello, skip_special_tokens=True) == "Hello world"
    assert expected("chatglm2")["rows"][0]["decoded"] == "Hello world"
    assert expected("chatglm3")["rows"][0]["decoded"] == "[gMASK]sop Hello world"  # no leading-space strip
    v3 = AutoTokenizer.from_pretrained(FIXTURES / "chatglm3")
    user = v3.convert_tokens_to_ids("<|user|>")
    assert v3.decode([user, v3.eos_token_id]) == "<|user|>"
    assert v3.decode([user], skip_special_tokens=True) == ""


def test_chatglm_version_is_read_from_what_the_folder_says(tmp_path):
    """ChatGLM3 ships ChatGLM2's tokenizer.model: its role tokens are found in its own
    tokenization_chatglm.py (read, never run), its chat template or its name; otherwise the
    folder is ChatGLM2. Pieces colliding with the appended tokens are an error naming the file."""
    shutil.copy(FIXTURES / "chatglm2" / "tokenizer.model", tmp_path)
    config = json.loads((FIXTURES / "chatglm2" / "tokenizer_config.json").read_text())
    config.pop("name_or_path")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == 705
    (tmp_path / "tokenization_chatglm.py").write_text('special_tokens = ["[MASK]", "<|user|>"]\n')
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == 709
    (tmp_path / "tokenization_chatglm.py").unlink()
    config["chat_template"] = "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}{% endfor %}<|assistant|>"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert len(AutoTokenizer.from_pretrained(tmp_path)) == 709
    # only the auto_map naming the class is enough
    config = {"auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]}}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    assert AutoTokenizer.from_pretrained(tmp_path).encode("a")[:2] == [701, 703]
    # a model holding "sop" as a piece: rename a three-byte piece in the protobuf (same length)
    data = (FIXTURES / "chatglm2" / "tokenizer.model").read_bytes()
    pieces = [p.piece for p in read_sentencepiece_model(FIXTURES / "chatglm2" / "tokenizer.model").pieces]
    victim = next(p for p in pieces if len(p.encode()) == 3 and data.count(b"\x0a\x03" + p.encode()) == 1)
    (tmp_path / "tokenizer.model").write_bytes(data.replace(b"\x0a\x03" + victim.encode(), b"\x0a\x03sop"))
    assert "sop" in {p.piece for p in read_sentencepiece_model(tmp_path / "tokenizer.model").pieces}
    with pytest.raises(SentencePieceError, match=r"tokenizer.model: the pieces \['sop'\] collide"):
        AutoTokenizer.from_pretrained(tmp_path)


def test_chatglm6b_convention():
    """ChatGLM-6B (ice_text.model, its tokenization_chatglm.py): ids after num_image_tokens image
    ids (class default 20000, the final config's 0), [gMASK] <sop> appended (a pair: + b + <eop>),
    its named tokens split the text with the whitespace beside them stripped while [gMASK] and
    </s> in text are plain characters, newline/tab/space runs as <n>/<|tab|>/<|blank_N|>, pad
    <pad> on the left and removed by decode, image ids decoded to <image_N>."""
    for name, offset in (("chatglm", 20000), ("chatglm_noimg", 0)):
        tok, want = AutoTokenizer.from_pretrained(FIXTURES / name), expected(name)
        assert want["offset"] == offset and tok.vocab_size == offset + 700
        assert tok.gmask_token == "[gMASK]" and tok.gmask_token_id == want["gmask_token_id"]
        assert tok.end_token == "</s>" and tok.end_token_id == offset + 2
        assert (tok.eos_token_id, tok.pad_token_id) == (want["eos_token_id"], want["pad_token_id"])
        assert tok.backend_tokenizer.encode("Hello", "world").ids == want["pair"]
        rows = {r["text"]: r for r in want["rows"]}
        hello = rows["Hello world"]["ids"]
        assert hello[-2:] == [tok.gmask_token_id, tok.bos_token_id] and min(hello) >= offset
        glued = rows["<sop>glued<eop> and  <pad>  spaced  [MASK]  and <unk> here"]["ids_no_special"]
        assert glued[0] == tok.bos_token_id and tok.pad_token_id in glued and tok.unk_token_id in glued
        literal = rows["</s>[gMASK]<|blank_3|><n>literal marks"]
        assert tok.gmask_token_id not in literal["ids_no_special"] and tok.end_token_id not in literal["ids_no_special"]
        marks = rows["a\n\n\nb\t\t\tc        d"]["tokens"]
        assert marks.count("<n>") == 3 and marks.count("<|tab|>") == 3 and "<|blank_8|>" in marks
        assert "<|blank_80|>" in rows["x" + " " * 85 + "y" + " " * 81 + "z" + " " * 80]["tokens"]
        batch = tok(["Hello world", "a"], padding=True)
        assert batch["input_ids"][1][0] == tok.pad_token_id and batch["attention_mask"][1][0] == 0
        assert tok.decode(batch["input_ids"][1]) == "a"
    img = AutoTokenizer.from_pretrained(FIXTURES / "chatglm")
    assert img.decode([5, 17]) == expected("chatglm")["image_decoded"] == "<image_5><image_17>"


def test_chatglm6b_bad_config_is_named(tmp_path):
    for f in ("ice_text.model", "tokenizer_config.json"):
        shutil.copy(FIXTURES / "chatglm" / f, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "num_image_tokens": "many"}))
    with pytest.raises(SentencePieceError, match=r"tokenizer_config.json: num_image_tokens must be"):
        AutoTokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": "<start>"}))
    with pytest.raises(SentencePieceError, match=r"ice_text.model: ChatGLM-6B's bos_token '<start>' is not a piece"):
        AutoTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["chatglm2", "chatglm3", "chatglm"])
def test_chatglm_save_pretrained_keeps_the_authors_layout(tmp_path, name):
    """Saving writes the SentencePiece file and a config that loads back with the same
    convention (no tokenizer.json, which would lose it)."""
    tok = AutoTokenizer.from_pretrained(FIXTURES / name)
    (tmp_path / "tokenizer.json").write_text("{}")  # a stale one would be read first
    files = tok.save_pretrained(tmp_path)
    spm_name = "ice_text.model" if name == "chatglm" else "tokenizer.model"
    assert str(tmp_path / spm_name) in files and not (tmp_path / "tokenizer.json").exists()
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert (again.vocab_size, len(again), again.padding_side) == (tok.vocab_size, len(tok), "left")
    for row in expected(name)["rows"]:
        assert again.encode(row["text"]) == row["ids"], row["text"]
        assert again.decode(row["ids"]) == row["decoded"], row["text"]
        assert again.decode(row["ids"], skip_special_tokens=True) == row["decoded_skip"], row["text"]


def test_a_training_checkpoint_with_a_chatglm_tokenizer_is_complete(tmp_path, monkeypatch):
    """Checkpoints hold ChatGLM's tokenizer as its SentencePiece file (save_pretrained writes no
    tokenizer.json for it): resume accepts that, and still refuses a folder with neither."""
    import numpy as np

    import paddlellm.training.checkpointing as checkpointing
    from paddlellm.checkpoint import CheckpointNotFoundError, save_state_dict

    monkeypatch.setattr(checkpointing, "read_trainer_state", lambda path: {"step": 1})  # only the files here
    monkeypatch.setattr(checkpointing, "check_training_state", lambda path: {})
    save_state_dict({"w": np.zeros((2, 2), dtype=np.float32)}, str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    AutoTokenizer.from_pretrained(FIXTURES / "chatglm").save_pretrained(tmp_path)
    assert checkpointing.check_checkpoint(tmp_path) == {"step": 1}
    (tmp_path / "ice_text.model").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"tokenizer.json: missing"):
        checkpointing.check_checkpoint(tmp_path)
