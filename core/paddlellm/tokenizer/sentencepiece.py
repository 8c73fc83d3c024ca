"""SentencePiece ``tokenizer.model`` files, converted to a ``tokenizers`` backend.

Checkpoints such as Llama-2, Mistral, Baichuan, ChatGLM, Yuan and older Gemma ship only the
SentencePiece model (a protobuf ``ModelProto``). ``transformers`` (v5) turns it into a
``tokenizers`` pipeline; this module builds the same pipeline, so ids, tokens and decoded
text are those of ``transformers.AutoTokenizer`` (tested on BPE-with-byte-fallback and
Unigram models, ``tests/test_spm_tokenizer.py``):

* ``tokenizer_class`` ``LlamaTokenizer`` (Llama-2, Mistral, ...): BPE over the pieces with
  byte fallback, merges ranked by the merged piece's id, no normaliser, a ``Metaspace``
  pre-tokenizer (dummy prefix on the first chunk only, or on every chunk when ``legacy``),
  control pieces as special tokens.
* any other class (the checkpoint's own tokenizer code, which ``transformers`` cannot run
  without ``trust_remote_code``): the model's own settings, so the result encodes like
  ``sentencepiece.SentencePieceProcessor.encode`` — the precompiled normalisation charsmap,
  whitespace squeezing, dummy prefix and escaping of the normaliser spec; BPE merges ranked
  by piece score or the Unigram model with its scores; user-defined pieces kept whole.

The protobuf is read by a small wire-format reader (only the fields used here), so neither
``sentencepiece`` nor ``protobuf`` is a dependency, and nothing in the file is executed.
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..checkpoint._errors import CheckpointFormatError

__all__ = ["SentencePieceModel", "read_sentencepiece_model", "tokenizer_from_sentencepiece"]

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
UNIGRAM, BPE = 1, 2
#: tokenizer classes built the way transformers' LlamaTokenizer builds them
LLAMA_CLASSES = {"LlamaTokenizer", "LlamaTokenizerFast"}


class SentencePieceError(CheckpointFormatError):
    """A malformed ``tokenizer.model`` (a ValueError and a PaddleLLMError: one-line CLI error)."""


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SentencePieceModel:
    """The parts of a ``ModelProto`` that decide tokenisation (defaults as in the .proto)."""

    pieces: list[Piece] = field(default_factory=list)
    model_type: int = UNIGRAM
    byte_fallback: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = -1
    unk_piece: str = "<unk>"
    bos_piece: str = "<s>"
    eos_piece: str = "</s>"
    pad_piece: str = "<pad>"
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True
    treat_whitespace_as_suffix: bool = False


# --- protobuf wire format ----------------------------------------------------------------------

def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise SentencePieceError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise SentencePieceError("varint too long")


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)``: ints for varints, bytes for the rest."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise SentencePieceError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise SentencePieceError("truncated field")
        yield number, wire, value


def _int32(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def read_sentencepiece_model(path: str | Path) -> SentencePieceModel:
    """Parse a SentencePiece ``.model`` file."""
    data = Path(path).read_bytes()
    model = SentencePieceModel()
    try:
        for number, wire, value in _fields(data):
            if number == 1 and wire == 2:  # SentencePiece
                piece = Piece("")
                for n, w, v in _fields(value):
                    if n == 1 and w == 2:
                        piece.piece = v.decode("utf-8")
                    elif n == 2 and w == 5:
                        piece.score = struct.unpack("<f", v)[0]
                    elif n == 3 and w == 0:
                        piece.type = v
                model.pieces.append(piece)
            elif number == 2 and wire == 2:  # TrainerSpec
                for n, w, v in _fields(value):
                    if w == 0:
                        {3: lambda: setattr(model, "model_type", v),
                         24: lambda: setattr(model, "treat_whitespace_as_suffix", bool(v)),
                         35: lambda: setattr(model, "byte_fallback", bool(v)),
                         40: lambda: setattr(model, "unk_id", _int32(v)),
                         41: lambda: setattr(model, "bos_id", _int32(v)),
                         42: lambda: setattr(model, "eos_id", _int32(v)),
                         43: lambda: setattr(model, "pad_id", _int32(v))}.get(n, lambda: None)()
                    elif w == 2 and n in (45, 46, 47, 48):
                        setattr(model, {45: "unk_piece", 46: "bos_piece", 47: "eos_piece", 48: "pad_piece"}[n],
                                v.decode("utf-8"))
            elif number == 3 and wire == 2:  # NormalizerSpec
                for n, w, v in _fields(value):
                    if n == 2 and w == 2:
                        model.precompiled_charsmap = bytes(v)
                    elif w == 0 and n in (3, 4, 5):
                        setattr(model, {3: "add_dummy_prefix", 4: "remove_extra_whitespaces",
                                        5: "escape_whitespaces"}[n], bool(v))
    except (SentencePieceError, UnicodeDecodeError, struct.error) as exc:
        raise SentencePieceError(f"{path}: not a SentencePiece model ({exc})") from None
    if not model.pieces:
        raise SentencePieceError(f"{path}: not a SentencePiece model (no pieces)")
    if model.model_type not in (UNIGRAM, BPE):
        raise SentencePieceError(f"{path}: SentencePiece model_type {model.model_type} (word/char) is not "
                                 "supported; only Unigram and BPE models are")
    if model.treat_whitespace_as_suffix:
        raise SentencePieceError(f"{path}: treat_whitespace_as_suffix models are not supported")
    return model


# --- conversion -------------------------------------------------------------------------------

def _generate_merges(vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of a piece into two pieces of the vocabulary, ranked by the merged piece's id
    (then by the lengths of the parts), as transformers' ``generate_merges`` without scores."""
    merges = []
    for merged, rank in vocab.items():
        local = [(merged[:i], merged[i:]) for i in range(1, len(merged))
                 if merged[:i] in vocab and merged[i:] in vocab]
        local.sort(key=lambda lr: (vocab[lr[0]], vocab[lr[1]]))
        merges.extend((left, right, rank) for left, right in local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])))  # stable, as Python's sorted
    return [(left, right) for left, right, _ in merges]


def _llama(model: SentencePieceModel, config: Mapping[str, Any]):
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE as BPEModel

    vocab = {p.piece: i for i, p in enumerate(model.pieces)}
    tok = Tokenizer(BPEModel(vocab=vocab, merges=_generate_merges(vocab), fuse_unk=True,
                             byte_fallback=True, dropout=None))
    add_prefix_space = config.get("add_prefix_space")
    add_prefix_space = True if add_prefix_space is None else bool(add_prefix_space)
    legacy = bool(config.get("legacy", False))
    scheme = ("first" if not legacy else "always") if add_prefix_space else "never"
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if add_prefix_space:
        steps.append(decoders.Strip(content=" ", left=1))
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                            for p in model.pieces if p.type == CONTROL])
    tok.add_tokens([AddedToken(p.piece, normalized=False, special=False)
                    for p in model.pieces if p.type == USER_DEFINED])
    return tok


def _generic(model: SentencePieceModel, config: Mapping[str, Any]):
    """The model's own settings (transformers' ``build_tokenizer_from_spm_proto``)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE as BPEModel
    from tokenizers.models import Unigram

    user_defined = [p.piece for p in model.pieces if p.type == USER_DEFINED]
    if model.model_type == BPE:
        vocab = {p.piece: i for i, p in enumerate(model.pieces)}
        normal = {p.piece: (p.score, i) for i, p in enumerate(model.pieces) if p.type == NORMAL}
        ranked = []
        for piece, (score, index) in normal.items():
            for i in range(1, len(piece)):
                left, right = piece[:i], piece[i:]
                if left in normal and right in normal:
                    ranked.append((-score, index, left, right))
        merges = [(left, right) for _, _, left, right in sorted(ranked)]
        tok = Tokenizer(BPEModel(vocab=vocab, merges=merges, unk_token=model.unk_piece, fuse_unk=True,
                                 byte_fallback=model.byte_fallback, dropout=None,
                                 ignore_merges=bool(user_defined)))
    else:
        tok = Tokenizer(Unigram([(p.piece, p.score) for p in model.pieces], unk_id=model.unk_id,
                                byte_fallback=model.byte_fallback))
    legacy = bool(config.get("legacy", True))
    steps = []
    if model.precompiled_charsmap:
        steps.append(normalizers.Precompiled(model.precompiled_charsmap))
    if model.remove_extra_whitespaces:  # spaces only: SentencePiece leaves newlines alone
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if model.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    if model.add_dummy_prefix and legacy:  # Metaspace skips the prefix before a leading "▁"; SentencePiece does not
        steps.append(normalizers.Replace(Regex(r"\A▁"), "▁▁"))
    tok.normalizer = normalizers.Sequence(steps)
    pre = []
    if model.add_dummy_prefix:
        pre.append(pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always" if legacy else "first",
                                            split=False))
    if user_defined:
        pattern = "|".join(re.escape(p) for p in sorted(user_defined, key=len, reverse=True))
        pre.append(pre_tokenizers.Split(Regex(pattern), behavior="isolated"))
    if pre:
        tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    steps = [decoders.Replace("▁", " ")]
    if model.byte_fallback:
        steps.append(decoders.ByteFallback())
    if model.add_dummy_prefix:
        steps += [decoders.Fuse(), decoders.Strip(content=" ", left=1)]
    elif model.byte_fallback:
        steps.append(decoders.Fuse())
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                            for p in model.pieces if p.type == CONTROL])
    return tok


def tokenizer_from_sentencepiece(path: str | Path, config: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(tokenizers.Tokenizer, config additions)`` for the SentencePiece model at ``path``
    (``config``: the checkpoint's ``tokenizer_config.json``). The additions name the BOS /
    EOS / UNK pieces of the model when the config does not."""
    model = read_sentencepiece_model(path)
    cls = str(config.get("tokenizer_class") or "")
    if cls in LLAMA_CLASSES:
        if model.model_type != BPE:
            raise SentencePieceError(f"{path}: tokenizer_class {cls} expects a BPE SentencePiece model, "
                                     "this one is Unigram")
        return _llama(model, config), {}
    extra: dict[str, Any] = {}
    for name, index, piece in (("bos_token", model.bos_id, model.bos_piece),
                               ("eos_token", model.eos_id, model.eos_piece),
                               ("unk_token", model.unk_id, model.unk_piece)):
        if index >= 0:
            extra[name] = piece or {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}[name]
    return _generic(model, config), extra
