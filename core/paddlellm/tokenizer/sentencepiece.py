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
* ``ChatGLMTokenizer`` of ChatGLM2-6B / ChatGLM3-6B (its own ``tokenization_chatglm.py``,
  :func:`chatglm_convention`): the model's own settings as below, nothing in the text matched
  as a special token (their code encodes text with SentencePiece alone), ``[MASK] [gMASK]
  [sMASK] sop eop`` (+ ChatGLM3's ``<|system|> <|user|> <|assistant|> <|observation|>``)
  numbered after the pieces, ``[gMASK] sop`` prepended by the post-processor.
* ChatGLM-6B's ``ice_text.model`` (:func:`_chatglm6b`): its own settings as below behind its
  ``SPTokenizer``'s text marks (``\n`` -> ``<n>``, tab -> ``<|tab|>``, space runs ->
  ``<|blank_N|>``), ids after ``num_image_tokens`` image ids, ``[gMASK] <sop>`` appended.
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

__all__ = ["ChatGLMConvention", "SentencePieceModel", "chatglm_convention", "read_sentencepiece_model",
           "tokenizer_from_sentencepiece"]

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


def _generic(model: SentencePieceModel, config: Mapping[str, Any], *, id_offset: int = 0,
             control_special: bool = True, pre_normalizers: tuple = (), text_decoders: tuple = ()):
    """The model's own settings (transformers' ``build_tokenizer_from_spm_proto``).

    ChatGLM-6B's additions: ``id_offset`` ids named ``<image_N>`` before the pieces (never
    produced from text), ``control_special`` false to leave control pieces out of the added
    tokens (never matched in text), ``pre_normalizers`` run on the text before the model's own
    normalisation, ``text_decoders`` run on the decoded text."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE as BPEModel
    from tokenizers.models import Unigram

    user_defined = [p.piece for p in model.pieces if p.type == USER_DEFINED]
    images = [f"<image_{i}>" for i in range(id_offset)]
    if model.model_type == BPE:
        vocab = {piece: i for i, piece in enumerate(images)}
        vocab.update({p.piece: id_offset + i for i, p in enumerate(model.pieces)})
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
        low = min(p.score for p in model.pieces)  # image ids: never better than a piece; unk penalty unchanged
        tok = Tokenizer(Unigram([(piece, low) for piece in images] + [(p.piece, p.score) for p in model.pieces],
                                unk_id=id_offset + model.unk_id, byte_fallback=model.byte_fallback))
    legacy = bool(config.get("legacy", True))
    steps = list(pre_normalizers)
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
    elif model.byte_fallback or text_decoders:
        steps.append(decoders.Fuse())
    tok.decoder = decoders.Sequence(steps + list(text_decoders))
    if control_special:
        tok.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                                for p in model.pieces if p.type == CONTROL])
    return tok


# --- ChatGLM2 / ChatGLM3 ---------------------------------------------------------------------

#: the tokens ChatGLM2's ``SPTokenizer`` numbers after the SentencePiece pieces, in order
CHATGLM2_SPECIAL = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop")
#: ChatGLM3 appends its role tokens after them
CHATGLM3_ROLES = ("<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")


@dataclass(frozen=True)
class ChatGLMConvention:
    """How a ChatGLM2/ChatGLM3 folder's ``ChatGLMTokenizer`` numbers and writes its tokens.

    ``version`` 2 decodes the appended tokens to nothing, 3 writes their names; both decode
    BOS / EOS / control pieces and the pad (= unk) id to nothing, as their
    ``_convert_id_to_token`` does."""

    version: int

    @property
    def special(self) -> tuple[str, ...]:
        return CHATGLM2_SPECIAL + (CHATGLM3_ROLES if self.version == 3 else ())


def _auto_tokenizer_class(config: Mapping[str, Any]) -> str:
    auto = (config.get("auto_map") or {}).get("AutoTokenizer") if isinstance(config.get("auto_map"), Mapping) else None
    name = auto[0] if isinstance(auto, (list, tuple)) and auto else auto
    return str(name or "").rsplit(".", 1)[-1]


def chatglm_convention(directory: str | Path, config: Mapping[str, Any]) -> ChatGLMConvention | None:
    """The ChatGLM2/ChatGLM3 convention when the folder's tokenizer is their ``ChatGLMTokenizer``
    over ``tokenizer.model`` (``tokenizer_class`` or ``auto_map``), else ``None``.

    ChatGLM3 ships ChatGLM2's ``tokenizer.model``; it is told apart by what the folder says of
    itself: its ``tokenization_chatglm.py`` (read as text, never run) naming the role tokens,
    a chat template or ``added_tokens_decoder`` holding them, or a ``name_or_path`` naming
    chatglm3 (its published tokenizer_config.json does)."""
    directory = Path(directory)
    if "ChatGLMTokenizer" not in (str(config.get("tokenizer_class") or ""), _auto_tokenizer_class(config)):
        return None
    if not (directory / "tokenizer.model").is_file():
        return None
    code = directory / "tokenization_chatglm.py"
    text = ""
    if code.is_file() and code.stat().st_size < 1 << 20:
        text = code.read_text(encoding="utf-8", errors="replace")
    template = config.get("chat_template")
    added = [v.get("content") for v in (config.get("added_tokens_decoder") or {}).values() if isinstance(v, Mapping)]
    v3 = (any(role in text for role in CHATGLM3_ROLES)
          or any(role in str(template or "") for role in CHATGLM3_ROLES)
          or any(role in added for role in CHATGLM3_ROLES)
          or "chatglm3" in str(config.get("name_or_path") or "").lower())
    return ChatGLMConvention(3 if v3 else 2)


def _chatglm(model: SentencePieceModel, config: Mapping[str, Any], convention: ChatGLMConvention, path):
    from tokenizers import AddedToken, processors

    clash = [t for t in convention.special if t in {p.piece for p in model.pieces}]
    if clash:
        raise SentencePieceError(f"{path}: the pieces {clash} collide with the tokens ChatGLMTokenizer "
                                 "numbers after the SentencePiece vocabulary")
    tok = _generic(model, config)
    if model.unk_id >= 0:  # the pad id (their SPTokenizer pads with unk): decoded to nothing
        tok.add_special_tokens([AddedToken(model.pieces[model.unk_id].piece, normalized=False, special=True)])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in convention.special])
    n = len(model.pieces)
    ids = {t: tok.token_to_id(t) for t in convention.special}
    if list(ids.values()) != list(range(n, n + len(ids))):
        raise SentencePieceError(f"{path}: ChatGLM's appended tokens did not get the ids after the pieces ({ids})")
    eos = [(model.eos_piece, model.eos_id)] if model.eos_id >= 0 else []
    tok.post_processor = processors.TemplateProcessing(
        single="[gMASK]:0 sop:0 $A:0",
        pair="[gMASK]:0 sop:0 $A:0 $B:1" + (f" {model.eos_piece}:1" if eos else ""),
        special_tokens=[("[gMASK]", ids["[gMASK]"]), ("sop", ids["sop"]), *eos])
    return tok


# --- ChatGLM-6B ---------------------------------------------------------------------------------

#: ``SPTokenizer``'s whitespace marks: ``<|blank_N|>`` for runs of 2..80 spaces
CHATGLM6B_MAX_BLANK = 80
#: the named special tokens transformers' slow tokenizer splits ChatGLM-6B's text on, with their
#: class defaults (``gmask_token`` and ``end_token`` are not special-token attributes there)
CHATGLM6B_SPLIT = (("bos_token", "<sop>"), ("eos_token", "<eop>"), ("unk_token", "<unk>"),
                   ("pad_token", "<pad>"), ("mask_token", "[MASK]"))
CHATGLM6B_DEFAULTS = {**dict(CHATGLM6B_SPLIT), "gmask_token": "[gMASK]", "end_token": "</s>"}


def chatglm6b_image_tokens(config: Mapping[str, Any], path) -> int:
    """``num_image_tokens`` (the class default 20000; the final revision's config says 0)."""
    value = config.get("num_image_tokens", 20000)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 24:
        raise SentencePieceError(f"{Path(path).parent / 'tokenizer_config.json'}: num_image_tokens must be a "
                                 f"non-negative integer, got {value!r}")
    return value


def _chatglm6b(model: SentencePieceModel, config: Mapping[str, Any], path):
    """ChatGLM-6B's ``ChatGLMTokenizer`` (``ice_text.model``): newline / tab / space-run marks,
    the image-token offset, the named tokens matched in text with the whitespace beside them
    stripped, ``[gMASK] <sop>`` appended, the marks turned back into whitespace on decode."""
    from tokenizers import AddedToken, Regex, decoders, normalizers, processors

    offset = chatglm6b_image_tokens(config, path)
    marks = [normalizers.Replace("\n", "<n>"), normalizers.Replace("\t", "<|tab|>")]
    marks += [normalizers.Replace(Regex(f" {{{n}}}"), f"<|blank_{n}|>") for n in range(CHATGLM6B_MAX_BLANK, 1, -1)]
    unmarks = [decoders.Replace("<n>", "\n"), decoders.Replace("<|tab|>", "\t")]
    unmarks += [decoders.Replace(f"<|blank_{n}|>", " " * n) for n in range(2, CHATGLM6B_MAX_BLANK + 1)]
    if model.unk_id >= 0:  # SentencePiece writes an unknown piece as " ⁇ " (after the leading-space strip)
        unmarks.append(decoders.Replace(model.pieces[model.unk_id].piece, " \u2047 "))
    tok = _generic(model, config, id_offset=offset, control_special=False, pre_normalizers=tuple(marks),
                   text_decoders=tuple(unmarks))
    names = {key: str(config.get(key) or default) for key, default in CHATGLM6B_DEFAULTS.items()}
    ids = {}
    for key, token in names.items():
        index = tok.token_to_id(token)
        if index is None:
            raise SentencePieceError(f"{path}: ChatGLM-6B's {key} {token!r} is not a piece of the model")
        ids[key] = index
    tok.add_special_tokens([AddedToken(names[key], normalized=False, special=True, lstrip=True, rstrip=True)
                            for key, _ in CHATGLM6B_SPLIT])
    gmask, bos, eos = names["gmask_token"], names["bos_token"], names["eos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"$A:0 {gmask}:0 {bos}:0", pair=f"$A:0 {gmask}:0 {bos}:0 $B:1 {eos}:1",
        special_tokens=[(t, ids[k]) for k, t in (("gmask_token", gmask), ("bos_token", bos), ("eos_token", eos))])
    return tok, names, offset


def chatglm6b_silent_ids(model: SentencePieceModel, offset: int, pad_id: int) -> frozenset[int]:
    """Ids ChatGLM-6B's tokenizer decodes to nothing: the pad id (removed first) and the control
    pieces (``DecodePieces`` writes nothing for them)."""
    return frozenset({offset + i for i, p in enumerate(model.pieces) if p.type == CONTROL} | {pad_id})


def chatglm_silent_ids(model: SentencePieceModel, convention: ChatGLMConvention) -> frozenset[int]:
    """Ids ChatGLM's tokenizer decodes to nothing whatever ``skip_special_tokens`` says."""
    silent = {i for i, p in enumerate(model.pieces) if p.type == CONTROL}
    silent |= {i for i in (model.bos_id, model.eos_id, model.unk_id) if i >= 0}
    if convention.version == 2:
        silent |= set(range(len(model.pieces), len(model.pieces) + len(convention.special)))
    return frozenset(silent)


def tokenizer_from_sentencepiece(path: str | Path, config: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(tokenizers.Tokenizer, config additions)`` for the SentencePiece model at ``path``
    (``config``: the checkpoint's ``tokenizer_config.json``). The additions name the BOS /
    EOS / UNK pieces of the model when the config does not (ChatGLM's: its published EOS,
    UNK and pad tokens, left padding; the caller sets ``split_special_tokens``: their code
    matches no special token in text)."""
    model = read_sentencepiece_model(path)
    if Path(path).name == "ice_text.model":
        tok, names, _ = _chatglm6b(model, config, path)
        return tok, {**names, "padding_side": "left", "clean_up_tokenization_spaces": True}
    convention = chatglm_convention(Path(path).parent, config) if Path(path).name == "tokenizer.model" else None
    if convention is not None:
        extra = {"eos_token": model.eos_piece, "unk_token": model.unk_piece, "pad_token": model.unk_piece,
                 "padding_side": "left", "clean_up_tokenization_spaces": False}
        return _chatglm(model, config, convention, path), extra
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
