"""Streaming detokenization: token ids in, newly printable text out.

Decoding each token alone is wrong for byte-level BPE (a character split over several byte
tokens) and for SentencePiece-style tokenizers (whether ``▁`` becomes a space depends on the
token's position). ``tokenizers.decoders.DecodeStream`` solves this in the tokenizers library
itself (vLLM's prefix/read-offset windows, in Rust): it emits the text beyond what the window
up to the last emitted token decoded to, holding back while the text ends in an incomplete
UTF-8 sequence (U+FFFD). It does the stepping here. Kept by hand, for what DecodeStream does not
do:

* **the end of the stream** (:meth:`IncrementalDetokenizer.flush`): DecodeStream has no flush,
  so bytes of a character that never completed stay held; a full ``decode`` turns them into
  U+FFFD, and so does ``flush`` (from one full decode of the stream's ids);
* **transformers' clean-up** (``clean_up_tokenization_spaces`` of non-BPE tokenizers: ``" ,"``
  -> ``","``, ``" 's"`` -> ``"'s"``): a ``transformers`` step after the decoder, which
  DecodeStream does not know; applied to its raw text, holding back a short tail a later
  token could still change;
* **prompt context**: the prompt's last tokens are fed first (their text not emitted), so a
  SentencePiece ``▁word`` that follows the prompt keeps its space.

The concatenated output equals ``tokenizer.decode`` of the whole stream.
"""
from __future__ import annotations

from typing import Iterable

from tokenizers.decoders import DecodeStream

from .tokenizer import CLEANUP_REPLACEMENTS, Tokenizer, _clean_up_tokenization

__all__ = ["IncrementalDetokenizer"]

_REPLACEMENT = "\ufffd"
_PROMPT_CONTEXT = 5
_CLEANUP_PATTERNS = tuple(before for before, _ in CLEANUP_REPLACEMENTS)  # prompt tokens kept as decoding context for the first generated token


class IncrementalDetokenizer:
    """Feed token ids one by one with :meth:`push`; call :meth:`flush` at the end of the stream.

    With ``prompt_ids`` the generated text is decoded in the context of the prompt's last
    tokens, so a SentencePiece ``▁word`` that follows the prompt keeps its leading space:
    the output equals ``decode(prompt + generated)[len(decode(prompt)):]``. Without it, the
    output equals ``decode(generated)``.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True, prompt_ids: Iterable[int] | None = None):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # The backend skips added tokens flagged special; dropping them up front gives the same text
        # and keeps the decoding windows short.
        self._skip = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special} if skip_special_tokens else set()
        self._skip |= set(getattr(tokenizer, "decode_silent_ids", ()))  # decoded to nothing in any case
        self._lead_blank = bool(getattr(tokenizer, "decode_silent_ids", ()))
        prompt = [int(i) for i in (prompt_ids or []) if int(i) not in self._skip]
        self._context: list[int] = prompt[-_PROMPT_CONTEXT:]
        self._ids: list[int] = list(self._context)  # the context, then every token pushed
        self._backend = tokenizer.backend_tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        if self._context:  # decoded as context only: its text is not part of the output
            self._stream.step(self._backend, list(self._context))
        self._streamed = ""  # the raw text DecodeStream returned for the pushed tokens
        self.text = ""  # everything emitted so far
        # Tokenizers whose decode() also applies transformers' clean-up (non-BPE models with
        # clean_up_tokenization_spaces): clean the raw text, holding back a short tail that a later
        # token could still change (every clean-up pattern starts with a space and is <= 4 chars).
        self._cleanup = tokenizer.applies_cleanup()
        self._raw = ""

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.backend_tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _emit(self, raw_delta: str, final: bool = False) -> str:
        if not self._cleanup:
            self.text += raw_delta
            return raw_delta
        self._raw += raw_delta
        stable = len(self._raw)
        while not final and stable > 0:  # step back over a possible start of a clean-up pattern
            starts = [j for j in range(max(0, stable - 3), stable)
                      if self._raw[j] == " " and any(p.startswith(self._raw[j:stable]) for p in _CLEANUP_PATTERNS)]
            if not starts:
                break
            stable = starts[0]
        cleaned = _clean_up_tokenization(self._raw[:stable])
        delta = cleaned[len(self.text) :]
        self.text = cleaned
        return delta

    def push(self, token_id: int) -> str:
        """Add one token id; return the text that became printable (possibly empty)."""
        token_id = int(token_id)
        if token_id in self._skip:
            return ""
        if self._lead_blank and not self._ids and self._backend.id_to_token(token_id) == "\u2581":
            return ""  # decode drops these at the start of the text (see Tokenizer.decode)
        self._ids.append(token_id)
        delta = self._stream.step(self._backend, token_id)
        if not delta:
            return ""
        self._streamed += delta
        return self._emit(delta)

    def flush(self) -> str:
        """Emit whatever is held back (an incomplete character becomes U+FFFD, as in a full decode)."""
        whole = self._decode(self._ids)
        context = self._decode(self._context) if self._context else ""
        raw = whole[len(context):] if whole.startswith(context) else whole
        tail = raw[len(self._streamed):] if raw.startswith(self._streamed) else ""
        self._streamed += tail
        return self._emit(tail, final=True)
