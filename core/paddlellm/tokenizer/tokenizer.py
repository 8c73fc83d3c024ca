"""``Tokenizer``: a Hugging Face fast tokenizer directory read through the ``tokenizers`` library.

``tokenizer.json`` is the truth for normalisation, pre-tokenisation, the model and the
post-processor (BOS/EOS insertion), exactly as ``transformers`` (v5) uses it; a directory with
only a SentencePiece ``tokenizer.model`` is converted to the same ``tokenizers`` pipeline
``transformers`` builds from it (:mod:`.sentencepiece`);
``tokenizer_config.json`` (and the legacy ``special_tokens_map.json``) name the special tokens,
padding side, maximum length and chat template. Nothing is ever downloaded.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

from tokenizers import AddedToken
from tokenizers import Tokenizer as _Backend

from ..checkpoint._errors import CheckpointFormatError, CheckpointNotFoundError
from ..checkpoint.reader import MAX_JSON_BYTES
from .chat_template import render_chat_template

#: every file a tokenizer folder may hold (what a tool that writes a model folder copies along
#: with the weights): the fast tokenizer, its settings, SentencePiece models (ChatGLM-6B's
#: ``ice_text.model`` too), BPE vocabularies and the chat template file
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "tokenizer.model", "ice_text.model", "vocab.json",
                   "merges.txt", "vocab.txt", "chat_template.jinja", "chat_template.json")

__all__ = ["Tokenizer", "AutoTokenizer", "SPECIAL_TOKEN_NAMES"]

SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no maximum length"
LARGE_INTEGER = int(1e20)  # model_max_length above this means unlimited
_TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")


def _token_content(value: Any) -> str | None:
    """A special-token value from a config: a string or a serialised ``AddedToken`` dict."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping) and "content" in value:
        return value["content"]
    if isinstance(value, AddedToken):
        return value.content
    raise TypeError(f"Special token must be a string or an AddedToken dict, got {value!r}")


def _read_json(path: Path) -> dict:
    """A tokenizer JSON file; malformed, binary or non-object content is an error naming it."""
    from ..checkpoint import CheckpointFormatError, read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise CheckpointFormatError(f"{path}: expected a JSON object")
    return data


def _to_id_list(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):  # numpy array, paddle tensor
        ids = ids.tolist()
    if isinstance(ids, int):
        return [ids]
    return [int(i) for i in ids]


# transformers' clean_up_tokenization, applied in this order.
CLEANUP_REPLACEMENTS = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                        (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


def _clean_up_tokenization(text: str) -> str:
    for before, after in CLEANUP_REPLACEMENTS:
        text = text.replace(before, after)
    return text


class Tokenizer:
    """A tokenizer in Hugging Face layout with the ``transformers`` API people already use."""

    def __init__(self, backend: _Backend, config: Mapping[str, Any] | None = None, *, name_or_path: str = ""):
        config = dict(config or {})
        self._backend = backend
        self._lock = threading.Lock()  # the backend's padding/truncation settings are per call
        self.name_or_path = name_or_path
        self.init_config = config
        self.padding_side = config.get("padding_side", "right")
        self.truncation_side = config.get("truncation_side", "right")
        for side in (self.padding_side, self.truncation_side):
            if side not in ("left", "right"):
                raise ValueError(f"padding_side/truncation_side must be 'left' or 'right', got {side!r}")
        max_len = config.get("model_max_length", config.get("max_len"))
        self.model_max_length = int(max_len) if max_len is not None else VERY_LARGE_INTEGER
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self._backend.encode_special_tokens = self.split_special_tokens
        self.chat_template = config.get("chat_template")
        if isinstance(self.chat_template, (list, tuple)):  # [{"name": ..., "template": ...}, ...]
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}

        # Named special tokens: the standard ones, then model-specific "<name>_token" keys.
        self._special: dict[str, str] = {}
        for name in SPECIAL_TOKEN_NAMES:
            if config.get(name) is not None:
                self._special[name] = _token_content(config[name])
        extras = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        named_extras = dict(extras) if isinstance(extras, Mapping) else {}
        extras = [] if isinstance(extras, Mapping) else extras
        for key, value in config.items():
            if key.endswith("_token") and key not in SPECIAL_TOKEN_NAMES and isinstance(value, (str, Mapping)):
                if isinstance(value, str) or "content" in value:
                    named_extras.setdefault(key, value)
        for key, value in named_extras.items():
            self._special[key] = _token_content(value)
        self._extra_special = [_token_content(t) for t in extras]

        # As transformers: tokens listed in the config's added_tokens_decoder that tokenizer.json lacks are
        # added, and every named/extra special token becomes a special added token (so it matches as a
        # whole in text and skip_special_tokens drops it), even when it is a plain vocabulary entry.
        for index, spec in sorted((config.get("added_tokens_decoder") or {}).items(), key=lambda kv: int(kv[0])):
            if isinstance(spec, Mapping) and backend.token_to_id(spec["content"]) is None:
                fields = {k: spec[k] for k in ("single_word", "lstrip", "rstrip", "normalized", "special") if k in spec}
                backend.add_tokens([AddedToken(spec["content"], **fields)])
        flagged = {t.content for t in backend.get_added_tokens_decoder().values() if t.special}
        # entries the config marks special that the vocabulary holds as plain tokens (Yuan's <sep>,
        # <pad>, ... are pieces of its tokenizer.model, made special by add_tokens(special_tokens=True))
        promote = [spec for spec in (config.get("added_tokens_decoder") or {}).values()
                   if isinstance(spec, Mapping) and spec.get("special") and spec["content"] not in flagged]
        if promote:
            backend.add_special_tokens([AddedToken(spec["content"], special=True, **{
                k: spec[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in spec})
                for spec in promote])
            flagged |= {spec["content"] for spec in promote}
        missing = [t for t in [*self._special.values(), *self._extra_special] if t is not None and t not in flagged]
        if missing:
            backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(missing)])

    def set_bos_eos(self, add_bos_token: bool = False, add_eos_token: bool = False) -> None:
        """Replace the post-processor so encoding adds BOS and/or EOS (transformers' ``add_bos_token``)."""
        from tokenizers import processors

        bos, eos = self._special.get("bos_token"), self._special.get("eos_token")
        add_bos, add_eos = add_bos_token and bos is not None, add_eos_token and eos is not None
        self.init_config = {**self.init_config, "add_bos_token": add_bos, "add_eos_token": add_eos}
        single = f"{bos + ':0 ' if add_bos else ''}$A:0{' ' + eos + ':0' if add_eos else ''}"
        pair = f"{single}{' ' + bos + ':1' if add_bos else ''} $B:1{' ' + eos + ':1' if add_eos else ''}"
        specials = [(t, self._backend.token_to_id(t)) for t, on in ((bos, add_bos), (eos, add_eos)) if on]
        self._backend.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "Tokenizer":
        """Load ``tokenizer.json`` + ``tokenizer_config.json`` (+ chat template files) from a directory.

        ``overrides`` replace config entries (``padding_side="left"``, ``chat_template=...``,
        ``pad_token=...``).
        """
        directory = Path(path)
        if directory.is_file() and directory.name == "tokenizer.json":
            directory = directory.parent
        if not directory.exists():
            from ..hub import is_hub_id, resolve_model_path

            if is_hub_id(str(path)):  # downloaded to (or found in) the Hub cache, or a clear error
                directory = Path(resolve_model_path(path))
        if not directory.is_dir():
            raise CheckpointNotFoundError(f"Tokenizer directory {str(path)!r} does not exist (and "
                                          "it is not a Hugging Face Hub id).")
        tokenizer_file = directory / "tokenizer.json"
        spm_file = directory / "tokenizer.model"
        if not spm_file.is_file() and (directory / "ice_text.model").is_file():
            spm_file = directory / "ice_text.model"  # ChatGLM-6B's SentencePiece file
        if not tokenizer_file.is_file() and not spm_file.is_file():
            raise CheckpointNotFoundError(
                f"No tokenizer.json or tokenizer.model in {str(directory)!r}: a fast tokenizer "
                "(tokenizer.json) or a SentencePiece model (tokenizer.model, ChatGLM-6B's ice_text.model) "
                "is read (convert other vocabulary-file "
                "tokenizers with transformers' save_pretrained first)."
            )
        config = _read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
        if "added_tokens_decoder" not in config and (directory / "special_tokens_map.json").is_file():
            for key, value in _read_json(directory / "special_tokens_map.json").items():
                if key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                    merged = list(config.get(key) or [])
                    merged += [v for v in value if _token_content(v) not in {_token_content(m) for m in merged}]
                    config[key] = merged
                else:
                    config[key] = value
        templates = cls._read_template_files(directory)
        if templates:
            config["chat_template"] = templates
        elif config.get("chat_template") is None and (directory / "chat_template.json").is_file():
            config["chat_template"] = _read_json(directory / "chat_template.json").get("chat_template")
        # tokenizer.json's post-processor decides BOS/EOS (transformers v5 ignores these config keys);
        # passing add_bos_token/add_eos_token explicitly rebuilds it.
        bos_eos = {k: overrides.pop(k) for k in ("add_bos_token", "add_eos_token") if k in overrides}
        config.update(overrides)
        if tokenizer_file.is_file():
            if tokenizer_file.stat().st_size > MAX_JSON_BYTES:
                raise CheckpointFormatError(f"{tokenizer_file}: larger than {MAX_JSON_BYTES} bytes")
            try:
                backend = _Backend.from_file(str(tokenizer_file))
            except Exception as exc:  # the Rust parser's error: malformed or forged file
                raise CheckpointFormatError(f"{tokenizer_file}: not a readable tokenizer file: "
                                            f"{str(exc)[:300]}") from None
        else:  # SentencePiece only: built as transformers builds it (see .sentencepiece)
            from .sentencepiece import chatglm_convention, tokenizer_from_sentencepiece

            if spm_file.stat().st_size > MAX_JSON_BYTES:
                raise CheckpointFormatError(f"{spm_file}: larger than {MAX_JSON_BYTES} bytes")
            backend, named = tokenizer_from_sentencepiece(spm_file, config)  # errors name the file
            for key, value in named.items():
                config.setdefault(key, value)
            glm = chatglm_convention(directory, config)
            if glm is not None:  # their code matches nothing in text: SentencePiece encodes it all
                config["split_special_tokens"] = True
            for key in ("add_bos_token", "add_eos_token"):  # no tokenizer.json post-processor to follow
                if config.get(key) and key not in bos_eos:
                    bos_eos[key] = True
        if backend.padding is not None:  # padding saved inside tokenizer.json names the pad token and side
            config.setdefault("pad_token", backend.padding["pad_token"])
            config.setdefault("padding_side", backend.padding["direction"])
        # ChatGLM-6B: its gmask/end tokens are no special-token attributes of its slow class, so the
        # text is not split on them; they are named here after the backend is set up
        glm6b = not tokenizer_file.is_file() and spm_file.name == "ice_text.model"
        unsplit = {k: config.pop(k) for k in ("gmask_token", "end_token") if glm6b and k in config}
        tokenizer = cls(backend, config, name_or_path=str(path))
        if glm6b:
            from .sentencepiece import chatglm6b_image_tokens, chatglm6b_silent_ids, read_sentencepiece_model

            tokenizer._special.update(unsplit)
            tokenizer.init_config = {**tokenizer.init_config, **unsplit}
            tokenizer.decode_silent_ids = chatglm6b_silent_ids(
                read_sentencepiece_model(spm_file), chatglm6b_image_tokens(config, spm_file), tokenizer.pad_token_id)
            tokenizer.cleanup_any_model = True  # transformers 4.27's clean-up, which its code runs on any model
            tokenizer.sentencepiece_file = spm_file
        glm = None
        if not tokenizer_file.is_file() and not glm6b:
            from .sentencepiece import chatglm_convention, chatglm_silent_ids, read_sentencepiece_model

            glm = chatglm_convention(directory, config)
            if glm is not None:
                spm_model = read_sentencepiece_model(spm_file)
                tokenizer.decode_silent_ids = chatglm_silent_ids(spm_model, glm)
                tokenizer.base_vocab_size = len(spm_model.pieces) + len(glm.special)
                tokenizer.sentencepiece_file = spm_file
        auto = (config.get("auto_map") or {}).get("AutoTokenizer")
        own_class = isinstance(auto, (list, tuple)) and auto and auto[0] and (len(auto) < 2 or not auto[1])
        if glm is None and not glm6b and not tokenizer_file.is_file() and own_class:
            # the checkpoint's own slow tokenizer class (no fast one): decode as it does
            tokenizer.slow_sentencepiece_decode = True
        if bos_eos:
            tokenizer.set_bos_eos(**bos_eos)
        return tokenizer

    @staticmethod
    def _read_template_files(directory: Path) -> str | dict[str, str] | None:
        """``chat_template.jinja`` and ``additional_chat_templates/*.jinja`` (newer transformers layout)."""
        templates: dict[str, str] = {}
        if (directory / "chat_template.jinja").is_file():
            templates["default"] = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        extra_dir = directory / "additional_chat_templates"
        if extra_dir.is_dir():
            for file in sorted(extra_dir.glob("*.jinja")):
                templates[file.name[: -len(".jinja")]] = file.read_text(encoding="utf-8")
        if list(templates) == ["default"]:
            return templates["default"]
        return templates or None

    # ------------------------------------------------------------------ vocabulary
    @property
    def backend_tokenizer(self) -> _Backend:
        return self._backend

    #: the base vocabulary's size when it counts tokens the backend holds as added ones (ChatGLM2/3's
    #: ``vocab_size`` counts the tokens its SPTokenizer numbers after the SentencePiece pieces)
    base_vocab_size: int | None = None

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        if self.base_vocab_size is not None:
            return self.base_vocab_size
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return self._backend.get_added_tokens_decoder()

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """Named special tokens (``bos_token`` ... and model-specific ones), as template variables."""
        return dict(self._special)

    @property
    def extra_special_tokens(self) -> list[str]:
        return list(self._extra_special)

    additional_special_tokens = extra_special_tokens

    @property
    def all_special_tokens(self) -> list[str]:
        return list(dict.fromkeys([*self._special.values(), *self._extra_special]))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    def __getattr__(self, name: str):
        # bos_token / eos_token / ... and their *_id, for standard and model-specific names.
        if name.startswith("__") or name == "_special":
            raise AttributeError(name)
        special = self.__dict__.get("_special", {})
        if name.endswith("_token_id"):
            token_name = name[: -len("_id")]
            if token_name in special or token_name in SPECIAL_TOKEN_NAMES:
                token = special.get(token_name)
                return None if token is None else self.convert_tokens_to_ids(token)
        if name in special or name in SPECIAL_TOKEN_NAMES:
            return special.get(name)
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    def __setattr__(self, name: str, value) -> None:
        # ``tokenizer.pad_token = tokenizer.eos_token`` works as in transformers.
        if name in SPECIAL_TOKEN_NAMES or name in self.__dict__.get("_special", {}):
            self.set_special_token(name, _token_content(value))
        else:
            object.__setattr__(self, name, value)

    def set_special_token(self, name: str, token: str | None) -> None:
        """Set ``pad_token`` etc. (adds the token to the vocabulary when it is new)."""
        if token is None:
            self._special.pop(name, None)
            return
        if self._backend.token_to_id(token) is None:
            self._backend.add_special_tokens([AddedToken(token, special=True, normalized=False)])
        self._special[name] = token

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int] | None:
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            if index is None and self._special.get("unk_token") is not None:
                index = self._backend.token_to_id(self._special["unk_token"])
            return index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in _to_id_list(ids) if i not in skip]

    # ------------------------------------------------------------------ encoding
    def __call__(
        self,
        text: str | Sequence[str],
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
    ) -> dict[str, Any]:
        """Tokenize one text or a batch; returns ``input_ids`` and ``attention_mask``.

        ``padding``: False | True/"longest" | "max_length"; ``truncation``: False | True |
        "longest_first" (``None``: truncate only when ``max_length`` is given without padding);
        ``max_length`` defaults to ``model_max_length``; ``return_tensors``: None (lists) | "np" | "pd" (Paddle, imported lazily).
        """
        batched = not isinstance(text, str)
        if batched and not all(isinstance(t, str) for t in text):
            raise TypeError("text must be a string or a list of strings")
        texts = list(text) if batched else [text]
        encodings = self._encode_batch(texts, add_special_tokens, padding, truncation, max_length,
                                       pad_to_multiple_of, padding_side)
        out: dict[str, Any] = {"input_ids": [e.ids for e in encodings]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return self._as_tensors(out, return_tensors, batched) if return_tensors else out

    def _encode_batch(self, texts, add_special_tokens, padding, truncation, max_length, pad_to_multiple_of,
                      padding_side):
        pad_mode = {False: None, None: None, "do_not_pad": None, True: "longest", "longest": "longest",
                    "max_length": "max_length"}.get(padding, "invalid")
        if pad_mode == "invalid":
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")
        if truncation is None and max_length is not None and pad_mode is None:
            truncation = True  # as transformers: max_length alone means "truncate to it"
        if truncation is True:
            truncation = "longest_first"
        elif truncation in (False, None, "do_not_truncate"):
            truncation = None
        elif truncation not in _TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be a bool or one of {_TRUNCATION_STRATEGIES}, got {truncation!r}")
        if max_length is None:  # fall back to model_max_length unless it means "unlimited"
            unlimited = self.model_max_length > LARGE_INTEGER
            if pad_mode == "max_length":
                pad_mode = None if unlimited else pad_mode
            if truncation:
                truncation = None if unlimited else truncation
            max_length = None if unlimited else self.model_max_length
        if truncation and pad_mode and pad_to_multiple_of and max_length % pad_to_multiple_of:
            raise ValueError(
                f"Truncation and padding are both activated but truncation length ({max_length}) is not a multiple "
                f"of pad_to_multiple_of ({pad_to_multiple_of})."
            )
        if pad_mode is not None and self.pad_token is None:
            raise ValueError(
                "Asking to pad but the tokenizer does not have a padding token: set one, e.g. "
                "tokenizer.set_special_token('pad_token', tokenizer.eos_token)."
            )
        with self._lock:
            backend = self._backend
            if truncation:
                backend.enable_truncation(max_length, stride=0, strategy=truncation, direction=self.truncation_side)
            else:
                backend.no_truncation()
            if pad_mode is not None:
                backend.enable_padding(
                    direction=padding_side or self.padding_side, pad_id=self.pad_token_id, pad_type_id=0,
                    pad_token=self.pad_token, length=max_length if pad_mode == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of,
                )
            else:
                backend.no_padding()
            try:
                return backend.encode_batch(texts, add_special_tokens=add_special_tokens)
            finally:
                backend.no_truncation()
                backend.no_padding()

    @staticmethod
    def _as_tensors(out: dict[str, Any], return_tensors: str, batched: bool) -> dict[str, Any]:
        import numpy as np

        if return_tensors not in ("np", "pd"):
            raise ValueError(f"return_tensors must be None, 'np' or 'pd', got {return_tensors!r}")
        arrays = {}
        for key, value in out.items():
            rows = value if batched else [value]
            if len({len(r) for r in rows}) > 1:
                raise ValueError(
                    "Unable to create a tensor from sequences of different lengths: use padding=True "
                    "(and truncation=True) to make them the same length."
                )
            arrays[key] = np.asarray(rows, dtype=np.int64).reshape(len(rows), -1)  # (B, T)
        if return_tensors == "pd":
            import paddle

            return {k: paddle.to_tensor(v) for k, v in arrays.items()}
        return arrays

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs) -> list[int]:
        return self(text, add_special_tokens=add_special_tokens, return_attention_mask=False, **kwargs)["input_ids"]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        with self._lock:
            return self._backend.encode(text, add_special_tokens=add_special_tokens).tokens

    # ------------------------------------------------------------------ decoding
    #: decode as the slow SentencePiece tokenizers do (set for a ``tokenizer.model`` whose own
    #: tokenizer code the checkpoint names, see :meth:`from_pretrained`)
    slow_sentencepiece_decode = False
    #: ids decoded to nothing whatever ``skip_special_tokens`` says (ChatGLM2/3's BOS, EOS, pad and
    #: control pieces, and ChatGLM2's appended tokens: their ``_convert_id_to_token`` gives "")
    decode_silent_ids: frozenset = frozenset()
    #: apply ``clean_up_tokenization_spaces`` to BPE models too (ChatGLM-6B's slow tokenizer does)
    cleanup_any_model = False

    def applies_cleanup(self) -> bool:
        """Whether :meth:`decode` applies transformers' clean-up: as transformers v5, never on BPE
        models (it corrupts their output) unless the checkpoint's own tokenizer code does."""
        bpe = type(self._backend.model).__name__ == "BPE"
        return self.clean_up_tokenization_spaces and (self.cleanup_any_model or not bpe)

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None) -> str:
        """Token ids (list, numpy array or Paddle tensor) back to text."""
        ids = _to_id_list(ids)
        if self.decode_silent_ids:
            ids = [i for i in ids if i not in self.decode_silent_ids]
            # SentencePiece drops the leading "▁" of every piece while nothing is written yet: pieces
            # that are only "▁" vanish there, the decoder's strip takes the next one's
            skip = set(self.all_special_ids) if skip_special_tokens else set()
            k = 0
            while k < len(ids) and (ids[k] in skip or self._backend.id_to_token(ids[k]) == "\u2581"):
                k += 1
            ids = [i for i in ids[:k] if i in skip] + ids[k:]
        if self.slow_sentencepiece_decode:
            text = self._decode_slow_sentencepiece(ids, skip_special_tokens)
        else:
            text = self._backend.decode(ids, skip_special_tokens=skip_special_tokens)
        cleanup = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # As transformers v5: the clean-up corrupts BPE output, so it is never applied to BPE models.
        if cleanup and (self.cleanup_any_model or type(self._backend.model).__name__ != "BPE"):
            text = _clean_up_tokenization(text)
        return text

    def _decode_slow_sentencepiece(self, ids: list[int], skip_special_tokens: bool) -> str:
        """The ``convert_tokens_to_string`` of the SentencePiece tokenizers that checkpoints ship as
        their own code (Baichuan's ``tokenization_baichuan.py``, copied from transformers' old
        slow ``LlamaTokenizer``): runs of ordinary pieces decode as SentencePiece decodes them; a
        special token is appended as is, after one space when the piece before it was not special
        and it is not the first (the space lands before the decoded run, as in that code)."""
        special_ids = set(self.all_special_ids)
        if skip_special_tokens:
            ids = [i for i in ids if i not in special_ids]
        out, run, prev_special = "", [], False
        for i, token_id in enumerate(ids):
            if token_id in special_ids:
                if not prev_special and i != 0:
                    out += " "
                out += self._backend.decode(run, skip_special_tokens=False) + self._backend.id_to_token(token_id)
                run, prev_special = [], True
            else:
                run.append(token_id)
                prev_special = False
        return out + self._backend.decode(run, skip_special_tokens=False)

    def batch_decode(self, sequences, skip_special_tokens: bool = False, **kwargs) -> list[str]:
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens, **kwargs) for s in sequences]

    # ------------------------------------------------------------------ chat
    def get_chat_template(self, chat_template: str | None = None, tools=None) -> str:
        """The template to use: a name from a dict of templates, a template string, or the default."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template is not None and chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                if tools is not None and "tool_use" in templates:
                    return templates["tool_use"]
                if "default" in templates:
                    return templates["default"]
                raise ValueError(
                    "This tokenizer has several chat templates and none is named 'default': pass one of "
                    f"{sorted(templates)} as chat_template."
                )
        if chat_template is not None:
            return chat_template
        if templates is None:
            raise ValueError(
                "Cannot apply a chat template: tokenizer.chat_template is not set and no chat_template was passed."
            )
        return templates

    def apply_chat_template(
        self,
        conversation,
        *,
        tokenize: bool = True,
        add_generation_prompt: bool = False,
        return_dict: bool = False,
        tools: Sequence[Mapping] | None = None,
        documents: Sequence[Mapping] | None = None,
        chat_template: str | None = None,
        continue_final_message: bool | str = False,
        padding: bool | str = False,
        truncation: bool | str = False,
        max_length: int | None = None,
        return_tensors: str | None = None,
        return_assistant_tokens_mask: bool = False,
        **template_kwargs,
    ):
        """Render messages (or a list of conversations) with the chat template, as ``transformers`` does.

        Returns the string(s) when ``tokenize=False``, else the ids (no extra special tokens are
        added: the template writes them), or the full encoding dict with ``return_dict=True``
        (plus ``assistant_masks``, 1 on tokens inside ``{% generation %}`` blocks, when
        ``return_assistant_tokens_mask=True``).
        """
        if return_assistant_tokens_mask and not (tokenize and return_dict):
            raise ValueError("return_assistant_tokens_mask=True requires return_dict=True and tokenize=True")
        if return_assistant_tokens_mask and continue_final_message:
            raise ValueError("continue_final_message is not compatible with return_assistant_tokens_mask.")
        template = self.get_chat_template(chat_template, tools)
        if isinstance(conversation, (list, tuple)) and not conversation:
            raise ValueError("Cannot apply a chat template to an empty conversation.")
        first = conversation[0]
        batched = isinstance(first, (list, tuple)) or hasattr(first, "messages")
        conversations = list(conversation) if batched else [conversation]
        variables = {**self.special_tokens_map, **template_kwargs}
        spans: list | None = [] if return_assistant_tokens_mask else None
        rendered = render_chat_template(
            template, conversations, tools=tools, documents=documents, add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message, generation_spans=spans, **variables,
        )
        if not tokenize:
            return rendered if batched else rendered[0]
        if not return_assistant_tokens_mask:
            out = self(rendered if batched else rendered[0], add_special_tokens=False, padding=padding,
                       truncation=truncation, max_length=max_length, return_tensors=return_tensors)
            return out if return_dict else out["input_ids"]
        encodings = self._encode_batch(rendered, False, padding, truncation, max_length, None, None)
        out = {"input_ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings],
               "assistant_masks": [self._assistant_mask(e, s) for e, s in zip(encodings, spans)]}
        if not batched:
            out = {k: v[0] for k, v in out.items()}
        return self._as_tensors(out, return_tensors, batched) if return_tensors else out

    @staticmethod
    def _assistant_mask(encoding, spans: list[tuple[int, int]]) -> list[int]:
        """1 on the tokens covering each generation span's characters (transformers' rule)."""
        mask = [0] * len(encoding.ids)
        for start_char, end_char in spans:
            start = encoding.char_to_token(start_char)
            end = encoding.char_to_token(end_char - 1)
            if start is None:  # the span was truncated away
                break
            for index in range(start, end + 1 if end else len(mask)):
                mask[index] = 1
        return mask

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | os.PathLike) -> tuple[str, ...]:
        """Write ``tokenizer.json``, ``tokenizer_config.json`` (with ``chat_template``) and
        ``special_tokens_map.json`` so that ``transformers.AutoTokenizer`` and this class load it.
        A tokenizer read through ChatGLM's own conventions writes its SentencePiece file (and
        the folder's ``tokenization_chatglm.py``) instead of ``tokenizer.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [self._save_sentencepiece(directory)] if self.sentencepiece_file is not None else []
        if not written:
            self._backend.save(str(directory / "tokenizer.json"))
        added = {
            str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                     "single_word": t.single_word, "special": t.special}
            for i, t in sorted(self.added_tokens_decoder.items())
        }
        config = {k: v for k, v in self.init_config.items()
                  if k not in ("extra_special_tokens", "additional_special_tokens", "chat_template")}
        config.update({
            "added_tokens_decoder": added,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "split_special_tokens": self.split_special_tokens,
        })
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        for name in SPECIAL_TOKEN_NAMES:
            config[name] = self._special.get(name)
        config.update({k: v for k, v in self._special.items() if k not in SPECIAL_TOKEN_NAMES})
        if self._extra_special:
            config["additional_special_tokens"] = list(self._extra_special)
        if isinstance(self.chat_template, dict):
            config["chat_template"] = [{"name": k, "template": v} for k, v in self.chat_template.items()]
        elif self.chat_template is not None:
            config["chat_template"] = self.chat_template
        special_map = {k: v for k, v in self._special.items() if k in SPECIAL_TOKEN_NAMES}
        if self._extra_special:
            special_map["additional_special_tokens"] = list(self._extra_special)
        files = []
        for name, payload in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
            with open(directory / name, "w", encoding="utf-8") as handle:
                json.dump(payload, handle, indent=2, ensure_ascii=False)
                handle.write("\n")
            files.append(str(directory / name))
        return (*(written or [str(directory / "tokenizer.json")]), *files)

    #: the SentencePiece file a tokenizer that follows a checkpoint's own tokenizer code was read
    #: from (ChatGLM's): saved as it is, so the folder keeps the authors' layout and conventions
    sentencepiece_file: Path | None = None

    def _save_sentencepiece(self, directory: Path) -> str:
        source = Path(self.sentencepiece_file)
        target = directory / source.name
        if target.resolve() != source.resolve():
            target.write_bytes(source.read_bytes())
            code = source.parent / "tokenization_chatglm.py"  # the authors' class, for transformers users
            if code.is_file():
                (directory / code.name).write_bytes(code.read_bytes())
        stale = directory / "tokenizer.json"
        if stale.is_file():  # it would be read instead of the SentencePiece file
            stale.unlink()
        return str(target)

    def __getstate__(self) -> dict:  # picklable for data-loader worker processes
        state = dict(self.__dict__)
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__["_lock"] = threading.Lock()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"len={len(self)}, special_tokens={self._special}, padding_side={self.padding_side!r})")


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(path)``: every supported directory loads as a ``Tokenizer``."""

    @staticmethod
    def from_pretrained(path: str | os.PathLike, **overrides) -> Tokenizer:
        return Tokenizer.from_pretrained(path, **overrides)

