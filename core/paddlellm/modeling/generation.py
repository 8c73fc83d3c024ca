"""Model-agnostic text generation: greedy, sampling and beam search over a KV cache.

Works with any model that is called as ``model(input_ids, attention_mask=..., position_ids=...,
cache=..., logits_to_keep=1) -> logits (B, T, V)`` and offers ``new_cache(batch, max_length)``
(a :class:`paddlellm.modeling.kv_cache.KVCache`); without ``new_cache`` every step re-runs the whole
sequence, and a model's ``cache_needs_refresh(cached, total)`` may ask for a re-prefill. Semantics follow ``transformers``: left padding with position ids
``cumsum(attention_mask) - 1``, HF's repetition penalty, top-k then top-p filtering after the
temperature, and beam hypotheses scored by ``sum_logprobs / new_len ** length_penalty``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

STRATEGIES = ("greedy_search", "sampling", "beam_search")


@dataclass
class GenerationConfig:
    """Decoding options (names follow PaddleNLP's ``generate``; HF aliases are accepted)."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    decode_strategy: str = "greedy_search"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    stop_sequences: list[list[int]] = field(default_factory=list)
    seed: int | None = None
    use_cache: bool = True

    def __post_init__(self) -> None:
        if self.decode_strategy not in STRATEGIES:
            raise ValueError(f"unknown decode_strategy '{self.decode_strategy}'; "
                             f"valid: {', '.join(STRATEGIES)}")
        if self.max_new_tokens < 0 or self.min_new_tokens < 0:
            raise ValueError("max_new_tokens and min_new_tokens must be >= 0")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (use decode_strategy='greedy_search')")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if self.decode_strategy == "beam_search" and self.num_beams < 2:
            raise ValueError("beam_search needs num_beams >= 2")
        if self.decode_strategy != "beam_search" and self.num_beams > 1:
            raise ValueError(f"num_beams={self.num_beams} needs decode_strategy='beam_search' "
                             f"(got '{self.decode_strategy}')")

    @property
    def eos_ids(self) -> list[int]:
        eos = self.eos_token_id
        return [] if eos is None else ([int(eos)] if isinstance(eos, int) else [int(e) for e in eos])


_ALIASES = {"do_sample": None, "stop_token_ids": "eos_token_id", "stop": "stop_sequences",
            "max_length": None}


def make_config(model: Any = None, config: GenerationConfig | None = None,
                **kwargs: Any) -> GenerationConfig:
    """A config from explicit options; eos/pad default to the model's ``generation_config``
    (``generation_config.json``), then to its config."""
    if kwargs.pop("do_sample", None):
        kwargs.setdefault("decode_strategy", "sampling")
    if "stop_token_ids" in kwargs:
        kwargs["eos_token_id"] = kwargs.pop("stop_token_ids")
    names = {f.name for f in dataclasses.fields(GenerationConfig)}
    unknown = sorted(set(kwargs) - names)
    if unknown:
        raise TypeError(f"unknown generation options: {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(names))}")
    base = dataclasses.asdict(config) if config is not None else {}
    model_config = getattr(model, "config", None)
    model_defaults = getattr(model, "generation_config", None) or {}  # generation_config.json
    for key in ("eos_token_id", "pad_token_id"):
        if key not in kwargs and base.get(key) is None:
            if model_defaults.get(key) is not None:
                kwargs[key] = model_defaults[key]
            elif model_config is not None:
                kwargs[key] = getattr(model_config, key, None)
    if (kwargs.get("num_beams") or 1) > 1 and "decode_strategy" not in kwargs and not base:
        kwargs["decode_strategy"] = "beam_search"  # as transformers: num_beams > 1 means beams
    if kwargs.get("decode_strategy") == "beam_search" or base.get("decode_strategy") == "beam_search":
        kwargs.setdefault("num_beams", base.get("num_beams") if base.get("num_beams", 1) > 1 else 4)
    return GenerationConfig(**{**base, **kwargs})


# --- logits processing ------------------------------------------------------------------------

def apply_repetition_penalty(logits, ids, penalty: float, mask=None):
    """HF semantics: logits of tokens seen in ``ids`` (``(B, L)``; left padding, where ``mask``
    is 0, excluded as transformers 5 does) are divided (positive) or multiplied (negative)."""
    import paddle

    if penalty == 1.0:
        return logits
    vocab = logits.shape[-1]
    if mask is not None:
        ids = paddle.where(mask == 0, paddle.full_like(ids, vocab), ids)
    seen = paddle.zeros([logits.shape[0], vocab + 1], dtype=logits.dtype)
    seen = paddle.put_along_axis(seen, ids, paddle.ones_like(ids, dtype=logits.dtype), axis=1)
    penalized = paddle.where(logits < 0, logits * penalty, logits / penalty)
    return paddle.where(seen[:, :vocab] > 0, penalized, logits)


def filter_top_k_top_p(logits: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """``(B, V)`` float logits with tokens outside top-k / nucleus top-p set to ``-inf``.

    transformers' rule: a token is kept when the probability mass of the tokens ranked
    above it is below ``top_p``. Only the best candidates are sorted (doubling until their
    mass reaches ``top_p``), not the whole vocabulary.
    """
    logits = logits.copy()
    vocab = logits.shape[-1]
    if top_k and top_k < vocab:
        kth = np.partition(logits, vocab - top_k, axis=-1)[:, vocab - top_k][:, None]  # (B, 1)
        logits[logits < kth] = -np.inf
    if top_p < 1.0:
        for row in logits:  # (V,) views
            probs = _softmax(row[None].astype(np.float64))[0]
            m = min(vocab, 64)
            while True:
                cand = np.argpartition(-probs, m - 1)[:m] if m < vocab else np.arange(vocab)
                order = cand[np.argsort(-probs[cand], kind="stable")]  # descending
                above = np.cumsum(probs[order]) - probs[order]  # mass ranked above each
                if m == vocab or above[-1] + probs[order[-1]] >= top_p:
                    break
                m = min(vocab, m * 4)
            keep = np.zeros(vocab, dtype=bool)
            keep[order[above < top_p]] = True
            keep[order[0]] = True  # at least one token
            row[~keep] = -np.inf
    return logits


class NonFiniteLogitsError(FloatingPointError):
    """The model produced NaN (or +inf) logits, or every token was excluded: there is no
    token to pick. Raised instead of silently emitting token 0."""


def check_logits(logits: np.ndarray) -> None:
    """Raise :class:`NonFiniteLogitsError` when a ``(B, V)`` row holds NaN or +inf, or
    excludes every token (all ``-inf``)."""
    if np.isnan(logits).any() or np.isposinf(logits).any():
        raise NonFiniteLogitsError("the model produced non-finite (NaN or +inf) logits; no "
                                   "token can be chosen")
    if np.isneginf(logits).all(axis=-1).any():
        raise NonFiniteLogitsError("every token is excluded (all logits are -inf)")


def scale_by_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """``logits / temperature`` for ``(B, V)`` float logits, numerically safe.

    The usual float32 division (same numbers as before, so seeded sampling is unchanged) is
    kept when it stays finite; a tiny temperature (``1e-38``) that overflows it is computed
    as ``(logits - max) / temperature`` in float64 instead: every entry <= 0, the best token
    at 0 and the rest at ``-inf`` (greedy in the limit) -- never ``inf - inf = NaN``.
    """
    check_logits(logits)
    with np.errstate(over="ignore", divide="ignore"):
        scores = logits / temperature
    if not np.isposinf(scores).any() and not (np.isneginf(scores) & np.isfinite(logits)).any():
        return scores
    x = logits.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)  # (B, 1), finite: checked above
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        shifted = x - top  # <= 0
        scores = shifted / temperature if temperature > 0 else np.full_like(shifted, -np.inf)
    scores[shifted == 0] = 0.0  # the best token(s), also for a temperature that is 0.0 in float64
    return scores


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _sample(logits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    check_logits(logits)
    with np.errstate(invalid="ignore"):
        probs = _softmax(logits.astype(np.float64))
    if not np.isfinite(probs).all():
        raise NonFiniteLogitsError("every token is excluded (all logits are -inf)")
    u = rng.random(probs.shape[0])[:, None]
    idx = (np.cumsum(probs, axis=-1) < u).sum(axis=-1)
    return np.minimum(idx, probs.shape[-1] - 1)


# --- the decoding loop ------------------------------------------------------------------------

class _Runner:
    """Prefill + one-token steps with a KV cache (or full recomputation without one)."""

    def __init__(self, model: Any, ids, mask, max_length: int, use_cache: bool) -> None:
        import paddle

        self.model = model
        self.cache = (model.new_cache(ids.shape[0], max_length)
                      if use_cache and hasattr(model, "new_cache") else None)
        self.mask = mask  # (B, T) int64
        self.padded = bool((mask == 0).any())
        self.ids = ids
        # a model that says where its tokens sit (``sequence_positions``: GLM's 2D positions
        # depend on the tokens) gets its own position ids; else ``cumsum(mask) - 1``
        self.positions_of = getattr(model, "sequence_positions", None)
        self.rows = None
        if self.positions_of is not None:
            keep = mask.numpy().astype(bool)
            self.rows = [r[k].tolist() for r, k in zip(ids.numpy(), keep)]  # unpadded tokens
            self.pos = paddle.to_tensor(self._prompt_positions(ids.shape[1]))  # (B, [K,] T)
            return
        self.next_pos = mask.sum(axis=-1)  # (B,) position of the next token
        pos = paddle.cumsum(mask, axis=-1) - 1
        self.pos = paddle.where(mask == 0, paddle.zeros_like(pos), pos)  # (B, T)

    def _prompt_positions(self, length: int) -> np.ndarray:
        """Each row's positions, left-padded with zeros to ``length``: ``(B, [K,] T)``."""
        rows = [np.asarray(self.positions_of(r, 0, len(r)), dtype=np.int64) for r in self.rows]
        out = np.zeros((len(rows), *rows[0].shape[:-1], length), dtype=np.int64)
        for b, p in enumerate(rows):
            if p.shape[-1]:
                out[b, ..., length - p.shape[-1]:] = p
        return out

    def _call(self, ids, pos):
        mask = self.mask if self.padded else None
        if self.cache is None:
            return self.model(self.ids, attention_mask=mask, position_ids=self.pos)[:, -1]
        return self.model(ids, attention_mask=mask, position_ids=pos, cache=self.cache,
                          logits_to_keep=1)[:, -1]

    def prefill(self):
        return self._call(self.ids, self.pos).astype("float32")  # (B, V)

    def step(self, tokens):
        """Feed ``(B,)`` tokens; return next logits ``(B, V)``."""
        import paddle

        tok = tokens.unsqueeze(-1)  # (B, 1)
        if self.rows is not None:
            cols = []
            for row, t in zip(self.rows, tokens.numpy().tolist()):
                row.append(int(t))
                cols.append(np.asarray(self.positions_of(row, len(row) - 1, len(row)), dtype=np.int64))
            pos = paddle.to_tensor(np.stack(cols))  # (B, [K,] 1)
        else:
            pos = self.next_pos.unsqueeze(-1)  # (B, 1)
            self.next_pos = self.next_pos + 1
        self.ids = paddle.concat([self.ids, tok], axis=-1)
        self.mask = paddle.concat([self.mask, paddle.ones_like(tok)], axis=-1)
        self.pos = paddle.concat([self.pos, pos], axis=-1)
        refresh = getattr(self.model, "cache_needs_refresh", None)
        if self.cache is not None and refresh is not None and refresh(len(self.cache[0]), self.ids.shape[1]):
            self.cache = self.model.new_cache(self.ids.shape[0], self.cache[0].max_length)
            return self._call(self.ids, self.pos).astype("float32")  # re-prefill everything
        return self._call(tok, pos).astype("float32")

    def reorder(self, index) -> None:
        import paddle

        self.ids = paddle.index_select(self.ids, index, axis=0)
        self.mask = paddle.index_select(self.mask, index, axis=0)
        self.pos = paddle.index_select(self.pos, index, axis=0)
        if self.rows is not None:
            self.rows = [list(self.rows[i]) for i in np.asarray(index.numpy()).tolist()]
        else:
            self.next_pos = paddle.index_select(self.next_pos, index, axis=0)
        if self.cache is not None:
            self.cache.reorder(index)


def _as_tensor(x, dtype="int64"):
    import paddle

    if isinstance(x, paddle.Tensor):
        return x.astype(dtype)
    return paddle.to_tensor(np.asarray(x), dtype=dtype)


def generate(model: Any, input_ids, attention_mask=None, generation_config: GenerationConfig | None = None,
             **kwargs: Any):
    """Generate continuations; returns ``(B, T + N)`` int64 ids (prompt + new tokens).

    Rows that finished early (eos or a stop sequence, both included) are filled with
    ``pad_token_id`` (or their eos when none is set); ``N <= max_new_tokens`` stops once
    every row is done.
    """
    import paddle

    cfg = make_config(model, generation_config, **kwargs)
    ids = _as_tensor(input_ids)
    if ids.ndim == 1:
        ids = ids.unsqueeze(0)
    mask = _as_tensor(attention_mask) if attention_mask is not None else paddle.ones_like(ids)
    if attention_mask is not None and bool((mask[:, -1] == 0).any()):
        import warnings

        warnings.warn("generate: the attention_mask has padding on the right; decoder-only "
                      "models need left padding for correct continuations", stacklevel=2)
    with paddle.no_grad():
        if cfg.decode_strategy == "beam_search":
            return _beam_search(model, ids, mask, cfg)
        return _greedy_or_sample(model, ids, mask, cfg)


def _pad_id(cfg: GenerationConfig) -> int:
    if cfg.pad_token_id is not None:
        return int(cfg.pad_token_id)
    return cfg.eos_ids[0] if cfg.eos_ids else 0


def _mask_eos(logits, cfg: GenerationConfig, step: int):
    if step >= cfg.min_new_tokens or not cfg.eos_ids:
        return logits
    import paddle

    ban = np.zeros([logits.shape[-1]], dtype=bool)
    ban[cfg.eos_ids] = True
    return paddle.where(paddle.to_tensor(ban), paddle.full_like(logits, float("-inf")), logits)


def _ends_with_stop(tokens: list[int], stops: Sequence[Sequence[int]]) -> bool:
    return any(len(s) and tokens[-len(s):] == list(s) for s in stops)


def _greedy_or_sample(model, ids, mask, cfg: GenerationConfig):
    import paddle

    batch, prompt_len = ids.shape
    runner = _Runner(model, ids, mask, prompt_len + cfg.max_new_tokens, cfg.use_cache)
    rng = np.random.default_rng(cfg.seed)
    pad, eos = _pad_id(cfg), set(cfg.eos_ids)
    finished = np.zeros(batch, dtype=bool)
    new_tokens: list[list[int]] = [[] for _ in range(batch)]
    logits = runner.prefill() if cfg.max_new_tokens else None
    for step in range(cfg.max_new_tokens):
        logits = apply_repetition_penalty(logits, runner.ids, cfg.repetition_penalty, runner.mask)
        logits = _mask_eos(logits, cfg, step)
        if cfg.decode_strategy == "greedy_search":
            check_logits(paddle.max(logits, axis=-1).numpy()[:, None])  # argmax skips NaN
            tokens = paddle.argmax(logits, axis=-1).numpy()
        else:
            scores = scale_by_temperature(logits.numpy(), cfg.temperature)
            tokens = _sample(filter_top_k_top_p(scores, cfg.top_k, cfg.top_p), rng)
        tokens = np.where(finished, pad, tokens).astype(np.int64)
        for b in range(batch):
            if not finished[b]:
                new_tokens[b].append(int(tokens[b]))
                if int(tokens[b]) in eos or _ends_with_stop(new_tokens[b], cfg.stop_sequences):
                    finished[b] = True
            else:
                new_tokens[b].append(pad)
        if finished.all() or step == cfg.max_new_tokens - 1:
            break
        logits = runner.step(paddle.to_tensor(tokens))
    out = np.asarray(new_tokens, dtype=np.int64).reshape([batch, -1])
    return paddle.concat([ids, paddle.to_tensor(out)], axis=-1)


class _Hypotheses:
    """Finished beams of one batch row (HF's ``BeamHypotheses``)."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool) -> None:
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.beams: list[tuple[float, list[int]]] = []
        self.worst = 1e9

    def add(self, tokens: list[int], sum_logprobs: float, new_len: int) -> None:
        score = sum_logprobs / (max(new_len, 1) ** self.length_penalty)
        if len(self.beams) < self.num_beams or score > self.worst:
            self.beams.append((score, tokens))
            if len(self.beams) > self.num_beams:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.beams))
                del self.beams[ranked[0][1]]
                self.worst = ranked[1][0]
            else:
                self.worst = min(score, self.worst)

    def is_done(self, best_sum_logprobs: float, new_len: int) -> bool:
        if len(self.beams) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return self.worst >= best_sum_logprobs / (max(new_len, 1) ** self.length_penalty)


def beam_step(logits, beam_scores: np.ndarray, seqs: list[list[int]], hyps: list[_Hypotheses],
              done: np.ndarray, cfg: GenerationConfig, step: int):
    """One beam-search step (shared by :func:`generate` and the engine's beam search).

    ``logits``: ``(B * nb, V)`` float32 Paddle tensor, processed (penalty, min length);
    ``beam_scores``: ``(B, nb)`` running sums of log-probabilities; ``seqs``: the ``B * nb``
    beams' new tokens. Finished candidates (eos / stop sequence) ranked within the top
    ``nb`` go to ``hyps``; ``done`` is updated in place. Returns ``(beam_scores,
    next_tokens, next_beams, seqs)`` with ``next_beams`` the source row of each new beam.
    """
    import paddle

    batch, nb = beam_scores.shape
    eos, pad = set(cfg.eos_ids), _pad_id(cfg)
    logprobs = logits - paddle.logsumexp(logits, axis=-1, keepdim=True)  # (B*nb, V)
    vocab = logprobs.shape[-1]
    scores = logprobs + paddle.to_tensor(beam_scores.reshape([-1, 1]))
    top_scores, top_idx = paddle.topk(scores.reshape([batch, nb * vocab]), 2 * nb, axis=-1)
    top_scores, top_idx = top_scores.numpy(), top_idx.numpy()
    next_scores = np.zeros((batch, nb), dtype=np.float32)
    next_tokens = np.full((batch, nb), pad, dtype=np.int64)
    next_beams = np.zeros((batch, nb), dtype=np.int64)
    for b in range(batch):
        if done[b]:
            next_beams[b] = b * nb
            continue
        k = 0
        for rank in range(2 * nb):
            beam, token = divmod(int(top_idx[b, rank]), vocab)
            score, src = float(top_scores[b, rank]), b * nb + beam
            candidate = seqs[src] + [token]
            if token in eos or _ends_with_stop(candidate, cfg.stop_sequences):
                if rank < nb:
                    hyps[b].add(candidate, score, step + 1)
                continue
            next_scores[b, k], next_tokens[b, k], next_beams[b, k] = score, token, src
            k += 1
            if k == nb:
                break
        done[b] = hyps[b].is_done(float(next_scores[b].max()), step + 1)
    seqs = [seqs[int(src)] + [int(tok)]
            for src, tok in zip(next_beams.reshape(-1), next_tokens.reshape(-1))]
    return next_scores, next_tokens, next_beams, seqs


def beam_best(hyps: list[_Hypotheses], seqs: list[list[int]], beam_scores: np.ndarray,
              done: np.ndarray) -> list[list[int]]:
    """The best hypothesis of every batch row once the search ends (rows not done add their
    live beams first, as transformers does)."""
    nb = beam_scores.shape[1]
    for b, h in enumerate(hyps):
        if not done[b]:
            for j in range(nb):
                h.add(seqs[b * nb + j], float(beam_scores[b, j]), len(seqs[b * nb + j]))
    return [max(h.beams, key=lambda x: x[0])[1] for h in hyps]


def _beam_search(model, ids, mask, cfg: GenerationConfig):
    import paddle

    batch, prompt_len = ids.shape
    nb = cfg.num_beams
    expand = paddle.to_tensor(np.repeat(np.arange(batch), nb))
    runner = _Runner(model, paddle.index_select(ids, expand, axis=0),
                     paddle.index_select(mask, expand, axis=0), prompt_len + cfg.max_new_tokens,
                     cfg.use_cache)
    pad = _pad_id(cfg)
    hyps = [_Hypotheses(nb, cfg.length_penalty, cfg.early_stopping) for _ in range(batch)]
    done = np.zeros(batch, dtype=bool)
    beam_scores = np.zeros((batch, nb), dtype=np.float32)
    beam_scores[:, 1:] = -1e9  # all beams start identical: expand from the first only
    seqs: list[list[int]] = [[] for _ in range(batch * nb)]
    logits = runner.prefill() if cfg.max_new_tokens else None
    for step in range(cfg.max_new_tokens):
        logits = apply_repetition_penalty(logits, runner.ids, cfg.repetition_penalty, runner.mask)
        logits = _mask_eos(logits, cfg, step)
        beam_scores, next_tokens, next_beams, seqs = beam_step(logits, beam_scores, seqs, hyps,
                                                               done, cfg, step)
        if done.all() or step == cfg.max_new_tokens - 1:
            break
        runner.reorder(paddle.to_tensor(next_beams.reshape(-1)))
        logits = runner.step(paddle.to_tensor(next_tokens.reshape(-1)))
    best = beam_best(hyps, seqs, beam_scores, done)
    width = max(len(s) for s in best) if best else 0
    out = np.full((batch, width), pad, dtype=np.int64)
    for b, s in enumerate(best):
        out[b, :len(s)] = s
    return paddle.concat([ids, paddle.to_tensor(out)], axis=-1)
