"""Tokenizers between GGUF's ``tokenizer.ggml.*`` metadata and Hugging Face ``tokenizer.json``.

GGUF keeps two kinds of vocabulary that matter for LLaMA-shaped models (llama.cpp's
``llama-vocab.cpp``):

* ``tokenizer.ggml.model = "gpt2"``: byte-level BPE (Qwen2, Llama 3, SmolLM, GPT-2...):
  ``tokens``, ``merges`` (``"left right"``) and ``token_type``; ``tokenizer.ggml.pre`` names
  the pre-tokenizer (the split regex), which is not stored as such.
* ``tokenizer.ggml.model = "llama"``: SentencePiece BPE with byte fallback (Llama 2,
  Mistral...): ``tokens``, ``scores`` and ``token_type`` (SentencePiece's piece types); llama.cpp
  merges the adjacent pair whose joined piece has the highest score.

Reading builds the ``tokenizers`` pipeline that encodes as llama.cpp does (for SentencePiece:
the pieces are written as a ``tokenizer.model`` protobuf and read by the core's SentencePiece
converter, which ranks merges by score like llama.cpp); writing goes the other way from a
``tokenizer.json``. BOS/EOS/UNK/PAD ids, ``add_bos_token``/``add_eos_token`` and the chat
template travel too.
"""
from __future__ import annotations

import json
import struct
import tempfile
from pathlib import Path
from typing import Any, Mapping

from .arch import GGUFError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# Split patterns of the byte-level pre-tokenizers, by llama.cpp's ``tokenizer.ggml.pre`` name.
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
#: pre name -> (split regex or None for GPT-2's built-in one, split digits first, NFC normaliser)
PRE_TOKENIZERS: dict[str, tuple[str | None, bool, bool]] = {
    "qwen2": (QWEN2_PATTERN, False, True),
    "llama-bpe": (LLAMA3_PATTERN, False, False),
    "gpt-2": (None, False, False),
    "default": (None, False, False),
    "smollm": (None, True, False),
}


# --- GGUF -> tokenizers ----------------------------------------------------------------------

def _field(fields: Mapping[str, Any], key: str, path: str):
    if key not in fields:
        raise GGUFError(f"{path}: metadata field '{key}' is missing")
    return fields[key]


def _spm_proto(tokens, scores, types, unk: int, bos: int, eos: int, add_prefix: bool) -> bytes:
    """A SentencePiece ``ModelProto`` (BPE, byte fallback) with these pieces."""
    def varint(n: int) -> bytes:
        n &= (1 << 64) - 1
        out = bytearray()
        while True:
            b = n & 0x7F
            n >>= 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)

    def key(number: int, wire: int) -> bytes:
        return varint(number << 3 | wire)

    def blob(number: int, data: bytes) -> bytes:
        return key(number, 2) + varint(len(data)) + data

    out = bytearray()
    for text, score, kind in zip(tokens, scores, types):
        piece = blob(1, text.encode("utf-8")) + key(2, 5) + struct.pack("<f", float(score))
        piece += key(3, 0) + varint(int(kind))
        out += blob(1, piece)
    trainer = key(3, 0) + varint(2) + key(35, 0) + varint(1)  # model_type BPE, byte_fallback
    for number, value in ((40, unk), (41, bos), (42, eos), (43, -1)):
        trainer += key(number, 0) + varint(value)
    out += blob(2, trainer)
    normalizer = key(3, 0) + varint(int(add_prefix)) + key(4, 0) + varint(0) + key(5, 0) + varint(1)
    out += blob(3, normalizer)
    return bytes(out)


def _special_names(fields: Mapping[str, Any], tokens: list[str]) -> dict[str, str | None]:
    names = {}
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        index = fields.get(f"tokenizer.ggml.{key}")
        names[name] = tokens[int(index)] if index is not None and 0 <= int(index) < len(tokens) else None
    return names


def save_tokenizer_from_gguf(fields: Mapping[str, Any], directory: str | Path, path: str) -> None:
    """Write ``tokenizer.json`` / ``tokenizer_config.json`` for the GGUF vocabulary in ``fields``."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as Backend
    from tokenizers.models import BPE

    from paddlellm.api import AutoTokenizer, Tokenizer

    kind = _field(fields, "tokenizer.ggml.model", path)
    tokens = list(_field(fields, "tokenizer.ggml.tokens", path))
    types = list(fields.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens))
    names = _special_names(fields, tokens)
    config: dict[str, Any] = {**names, "clean_up_tokenization_spaces": False,
                              "model_max_length": int(fields.get("_context_length") or 2048)}
    template = fields.get("tokenizer.chat_template")
    if template:
        config["chat_template"] = template
    add_bos = bool(fields.get("tokenizer.ggml.add_bos_token", kind == "llama"))
    add_eos = bool(fields.get("tokenizer.ggml.add_eos_token", False))
    if kind == "gpt2":
        pre = str(fields.get("tokenizer.ggml.pre", "default"))
        if pre not in PRE_TOKENIZERS:
            raise GGUFError(f"{path}: tokenizer.ggml.pre '{pre}' is not a pre-tokenizer we know "
                            f"(known: {', '.join(PRE_TOKENIZERS)})")
        pattern, digits, nfc = PRE_TOKENIZERS[pre]
        merges = [tuple(m.split(" ", 1)) for m in _field(fields, "tokenizer.ggml.merges", path)]
        try:
            backend = Backend(BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, unk_token=None,
                                  fuse_unk=False, byte_fallback=False))
        except Exception as exc:  # the tokenizers library's own message, e.g. a merge of unknown tokens
            raise GGUFError(f"{path}: tokenizer.ggml.tokens / tokenizer.ggml.merges do not form a BPE "
                            f"vocabulary: {exc}") from None
        if nfc:
            backend.normalizer = normalizers.NFC()
        steps = [pre_tokenizers.Digits(individual_digits=True)] if digits else []
        if pattern is not None:
            steps += [pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
                      pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
        else:
            steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True))
        backend.pre_tokenizer = steps[0] if len(steps) == 1 else pre_tokenizers.Sequence(steps)
        backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        backend.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
        backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                    for t, k in zip(tokens, types) if k == CONTROL])
        backend.add_tokens([AddedToken(t, special=False, normalized=False)
                            for t, k in zip(tokens, types) if k == USER_DEFINED])
        tokenizer = Tokenizer(backend, config)
    elif kind == "llama":
        scores = list(_field(fields, "tokenizer.ggml.scores", path))
        ids = {k: int(fields.get(f"tokenizer.ggml.{k}_token_id", d))
               for k, d in (("unknown", 0), ("bos", 1), ("eos", 2))}
        add_prefix = bool(fields.get("tokenizer.ggml.add_space_prefix", True))
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "tokenizer.model").write_bytes(
                _spm_proto(tokens, scores, types, ids["unknown"], ids["bos"], ids["eos"], add_prefix))
            # llama.cpp puts the space prefix after every special token: transformers' legacy mode
            Path(tmp, "tokenizer_config.json").write_text(json.dumps({**config, "legacy": True}), encoding="utf-8")
            tokenizer = AutoTokenizer.from_pretrained(tmp)
    else:
        raise GGUFError(f"{path}: tokenizer.ggml.model '{kind}' is not supported "
                        "(supported: 'gpt2' byte-level BPE, 'llama' SentencePiece BPE)")
    tokenizer.set_bos_eos(add_bos_token=add_bos, add_eos_token=add_eos)
    tokenizer.save_pretrained(directory)


# --- tokenizer.json -> GGUF ------------------------------------------------------------------

def _pre_name(data: Mapping[str, Any], where: str) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` for a byte-level tokenizer.json's pre-tokenizer."""
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    nfc = (data.get("normalizer") or {}).get("type") == "NFC"
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"]:
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, (known, digits, want_nfc) in PRE_TOKENIZERS.items():
            if known is not None and pattern == known and not digits and want_nfc == nfc:
                return name
    raise GGUFError(f"{where}: the byte-level pre-tokenizer {json.dumps(pre)[:200]} matches none that "
                    f"llama.cpp knows by name ({', '.join(PRE_TOKENIZERS)}); llama.cpp would split "
                    "text differently, so no GGUF tokenizer is written")


def gguf_tokenizer_fields(directory: str | Path, vocab_size: int) -> dict[str, tuple[str, Any]]:
    """``{key: (value type, value)}`` of the ``tokenizer.*`` metadata for the tokenizer in
    ``directory``; value types are ``"str"``, ``"u32"``, ``"bool"``, ``"[str]"``, ``"[f32]"``,
    ``"[i32]"``. llama.cpp needs one token per embedding row: a shorter vocabulary is padded
    with unused ``[PADi]`` tokens up to ``vocab_size`` (as its converter does); a longer one is
    an error."""
    from paddlellm.api import AutoTokenizer

    directory = Path(directory)
    where = str(directory / "tokenizer.json")
    tok = AutoTokenizer.from_pretrained(directory)
    data = json.loads(tok.backend_tokenizer.to_str())
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise GGUFError(f"{where}: model type '{model.get('type')}' has no GGUF equivalent that we write "
                        "(byte-level BPE and SentencePiece-style BPE with byte fallback are)")
    vocab = tok.get_vocab()
    size = max(vocab.values()) + 1
    if size > vocab_size:
        raise GGUFError(f"{where}: the tokenizer has {size} tokens but the model's embedding only "
                        f"{vocab_size} rows (config.json vocab_size); llama.cpp needs one row per token")
    size = vocab_size
    tokens = [f"[PAD{i}]" for i in range(size)]
    for text, index in vocab.items():
        tokens[index] = text
    types = [NORMAL] * size
    missing = set(range(size)) - set(vocab.values())
    for index in missing:
        types[index] = UNUSED
    for index, added in tok.added_tokens_decoder.items():
        types[index] = CONTROL if added.special else USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    out: dict[str, tuple[str, Any]] = {}
    if model.get("byte_fallback"):
        out["tokenizer.ggml.model"] = ("str", "llama")
        rank = {}
        for i, merge in enumerate(merges):
            rank.setdefault(merge.replace(" ", ""), i)
        # llama.cpp merges by highest score: the earliest merge producing a piece scores highest
        scores = [-float(rank.get(t, len(merges) + i)) for i, t in enumerate(tokens)]
        for i, t in enumerate(tokens):
            if types[i] == NORMAL and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                types[i] = BYTE
        if model.get("unk_token") in vocab:
            types[vocab[model["unk_token"]]] = UNKNOWN
        out["tokenizer.ggml.scores"] = ("[f32]", scores)
        text = json.dumps([data.get("normalizer"), data.get("pre_tokenizer")], ensure_ascii=False)
        out["tokenizer.ggml.add_space_prefix"] = ("bool", "▁" in text and '"never"' not in text)
    else:
        steps = json.dumps(data.get("pre_tokenizer"))
        if "ByteLevel" not in steps:
            raise GGUFError(f"{where}: a BPE model without byte fallback needs a ByteLevel pre-tokenizer "
                            "to be written as GGUF ('gpt2' vocabulary)")
        if not merges:
            raise GGUFError(f"{where}: a byte-level BPE without merges cannot be written: llama.cpp "
                            "refuses a 'gpt2' vocabulary without tokenizer.ggml.merges")
        out["tokenizer.ggml.model"] = ("str", "gpt2")
        out["tokenizer.ggml.pre"] = ("str", _pre_name(data, where))
        out["tokenizer.ggml.merges"] = ("[str]", merges)
    out["tokenizer.ggml.tokens"] = ("[str]", tokens)
    out["tokenizer.ggml.token_type"] = ("[i32]", types)
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token = tok.special_tokens_map.get(name)
        if token is not None and token in vocab:
            out[f"tokenizer.ggml.{key}"] = ("u32", vocab[token])
    probe = tok.encode("a", add_special_tokens=True)
    bare = tok.encode("a", add_special_tokens=False)
    bos, eos = tok.special_tokens_map.get("bos_token"), tok.special_tokens_map.get("eos_token")
    out["tokenizer.ggml.add_bos_token"] = ("bool", bool(bos) and probe[:1] == [vocab.get(bos)] != bare[:1])
    out["tokenizer.ggml.add_eos_token"] = ("bool", bool(eos) and probe[-1:] == [vocab.get(eos)] != bare[-1:])
    template = tok.chat_template
    if isinstance(template, dict):
        for name, text in template.items():
            out["tokenizer.chat_template" + ("" if name == "default" else f".{name}")] = ("str", text)
    elif template:
        out["tokenizer.chat_template"] = ("str", template)
    return out
