"""The engine: ``add_request`` / ``abort_request`` / ``step`` over a paged KV cache.

One :meth:`LLMEngine.step` is schedule -> execute -> update: the scheduler picks the running
decodes and the prefills it can admit, the model runs all their new tokens as one flattened
row through the paged attention kernel, and each sequence gets one sampled token (its
output, stop checks and streamed text).

Single-threaded by design: an engine belongs to the thread that built it, and a call from
any other thread raises :class:`~paddlellm.engine.ownership.EngineThreadError` (``stats()``,
a snapshot for monitoring, excepted). A server drives it from one engine thread
(:class:`paddlellm.serving.AsyncEngine`, which takes ownership with :meth:`take_ownership`)
and sends it typed operations; see :mod:`.ownership`.

Every option comes from one frozen :class:`~paddlellm.engine.config.EngineConfig`:
``LLMEngine.from_config(config)`` loads the model it names; ``from_pretrained(path, **options)``
and ``LLMEngine(model, tokenizer, **options)`` build that config from their keywords.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, ContextManager, Iterable

import numpy as np

from .config import EngineConfig
from ..modeling.kv_manager import PagedKVCache, num_blocks_for_budget, prefix_hashes
from .ownership import ThreadOwner, owned
from .sampling import (RequestOutput, SamplingParams, StopTracker, check_logits,
                       next_token_logprobs, repetition_penalty, sample_row,
                       token_logprobs)
from .scheduler import ScheduledBatch, Scheduler, Sequence
from .speculative import SpeculativeConfig, accept_or_resample, make_drafter, target_probs


STRIDE_FLAG = "FLAGS_use_stride_kernel"
#: prompt rows whose logits ``score_prompts`` holds at once
SCORE_ROWS = 256


@contextmanager
def plain_transposes(enabled: bool):
    """Run Paddle without stride kernels: with them a transpose is a view, and a matmul on
    that view goes through a strided copy that is far slower on CPU than the plain transpose
    kernel (measured: attention over 8 x 96 cached keys 2.7 ms vs 0.6 ms per layer)."""
    import paddle

    if not enabled:
        yield
        return
    old = paddle.get_flags([STRIDE_FLAG])[STRIDE_FLAG]
    paddle.set_flags({STRIDE_FLAG: False})
    try:
        yield
    finally:
        paddle.set_flags({STRIDE_FLAG: old})


def _eos_ids(model: Any) -> frozenset[int]:
    from ..modeling.generation import make_config

    return frozenset(make_config(model).eos_ids)


def _layout_extra_bytes(model: Any) -> int:
    """Bytes per cached token the model's KV-cache layout stores beside the keys and values
    (its optional ``extra_bytes_per_token``; Yuan's filter state), so the pool fits the budget."""
    name = getattr(model, "kv_cache_layout", None)
    if not name:
        return 0
    from ..interfaces import KVCacheLayout, member
    from ..modeling.kv_layout import get_kv_cache_layout

    extra = member(get_kv_cache_layout(name), KVCacheLayout, "extra_bytes_per_token")
    return int(extra(model)) if extra is not None else 0


class LLMEngine:
    """Continuous-batching inference over one model (see the module docstring).

    ``LLMEngine(model, tokenizer, config, **options)``: ``config`` (default: the defaults)
    with the keyword ``options`` (any :class:`EngineConfig` field) applied. The loading
    options (``model_name_or_path``, ``lora_path``, ``quant_type``, ``dtype``, ``device``)
    are what :meth:`from_config` loads; a ready ``model`` is used as it is. ``drafter``: any
    object with ``propose(seq_tokens, k)`` (speculative decoding with your own drafter).
    ``lora_modules`` (``[(name, folder)]``) are loaded unmerged onto ``model`` (its base
    weights unchanged): a request's ``adapter`` picks one, and requests for different
    adapters run in one step (:func:`paddlellm.modeling.peft.load_serving_adapters`).
    """

    def __init__(self, model: Any, tokenizer: Any = None, config: EngineConfig | None = None, *,
                 model_name: str = "model", drafter: Any = None, **options: Any) -> None:
        import paddle

        self.config = config = EngineConfig.build(config, **options)
        self._owner = ThreadOwner()
        c = model.config
        model.eval()
        self._plain_transposes = paddle.get_device().startswith("cpu")
        self.model, self.tokenizer, self.model_name = model, tokenizer, model_name
        limit = c.max_position_embeddings
        scaling = getattr(c, "rope_scaling", None) or {}
        if scaling.get("original_max_position_embeddings") and scaling.get("rope_type",
                                                                            scaling.get("type")) == "longrope":
            # Phi-3 switches every position's rotary factors once a sequence passes the
            # original length; sequences of one batched call must not straddle it
            limit = min(limit, scaling["original_max_position_embeddings"])
        self.max_model_len = int(min(config.max_model_len or limit, limit))
        if self.max_model_len < 2:
            raise ValueError(f"max_model_len must be >= 2, got {self.max_model_len}")
        dtype = model.dtype
        _use_attention_kernel(config.attention_kernel, c.head_dim, dtype)
        num_blocks = config.num_blocks
        if num_blocks is None:
            num_blocks = num_blocks_for_budget(config.kv_cache_bytes, c.num_layers,
                                               config.block_size, c.num_kv_heads, c.head_dim,
                                               getattr(model, "kv_cache_dtype", dtype),
                                               self.max_model_len, config.max_num_seqs,  # int8 KV: 4x blocks
                                               _layout_extra_bytes(model))
        make_cache = getattr(model, "new_paged_cache", None) or PagedKVCache  # e.g. int8 KV (quant)
        self.cache = make_cache(c.num_layers, num_blocks, config.block_size, c.num_kv_heads,
                                c.head_dim, dtype)
        #: why prefix caching is off although asked for (None: on, or not asked for)
        self.prefix_caching_off_reason = (_prefix_caching_off_reason(model, self.cache)
                                          if config.enable_prefix_caching else None)
        self.prefix_caching = config.enable_prefix_caching and self.prefix_caching_off_reason is None
        self.scheduler = Scheduler(self.cache.blocks, config.max_num_seqs,
                                   config.max_num_batched_tokens or max(4096, self.max_model_len),
                                   prefix_caching=self.prefix_caching)
        self.eos_ids = _eos_ids(model)
        self._requests: dict[str, Sequence] = {}
        self._aborted: list[RequestOutput] = []
        self.counters = {"requests_added": 0, "requests_finished": 0, "requests_aborted": 0,
                         "prompt_tokens": 0, "generation_tokens": 0, "steps": 0,
                         "seq_steps": 0, "seq_step_tokens": 0, "spec_draft_tokens": 0,
                         "spec_accepted_tokens": 0}
        # speculative decoding (see .speculative): a named drafter, or any object with
        # propose(seq_tokens, k) passed as ``drafter``
        self.speculative = self.drafter = None
        if config.speculative or drafter is not None:
            self.speculative = SpeculativeConfig(
                config.speculate_method or "custom", config.speculate_max_draft_token_num,
                config.speculate_max_ngram_size, config.speculate_verify_window,
                config.speculate_max_candidate_len)
            self.drafter = drafter if drafter is not None else make_drafter(self.speculative, model)
        self.adapters = None  # paddlellm.modeling.peft.ServingAdapters of --lora_modules
        if config.lora_modules:
            from ..modeling.peft import load_serving_adapters

            if model_name in {n for n, _ in config.lora_modules}:
                raise ValueError(f"--lora_modules: adapter name '{model_name}' is the served "
                                 "model's name; choose another")
            self.adapters = load_serving_adapters(
                model, config.lora_modules,
                base_names=[getattr(model, "name_or_path", None), model_name])

    @property
    def adapter_names(self) -> tuple[str, ...]:
        """The names of the adapters served beside the base (``--lora_modules``)."""
        return self.adapters.names if self.adapters is not None else ()

    def _adapter_rows(self, indices) -> ContextManager[None]:
        """Inside: token row ``n`` of the forward runs with adapter ``indices[n]``."""
        if self.adapters is None:
            return nullcontext()
        return self.adapters.rows(indices)

    @property
    def block_size(self) -> int:
        return self.cache.blocks.block_size

    @property
    def max_num_seqs(self) -> int:
        return self.scheduler.max_num_seqs

    def take_ownership(self) -> ContextManager[None]:
        """``with engine.take_ownership():`` -- the calling thread owns the engine for the
        block (then its previous owner again); refused while another thread is inside a call
        or holds it this way. See :mod:`paddlellm.engine.ownership`."""
        return self._owner.take()

    @classmethod
    def for_model(cls, model: Any, tokenizer: Any = None, config: EngineConfig | None = None,
                  **options: Any) -> "LLMEngine":
        """An engine around an in-memory model that reads its live parameters (no copy, no
        merge): a training stage's rollouts see every optimizer step, LoRA adapters applied
        as they are (their layers run unmerged). ``model`` may sit inside a strategy wrapper.
        Building the engine puts the model in eval mode; a caller that trains switches it
        back (``model.train()``) after generating."""
        from ..modeling.peft import unwrap

        inner = unwrap(model)
        return cls(inner, tokenizer, config, model_name=str(getattr(inner, "name_or_path", "")
                                                           or "model"), **options)

    @classmethod
    def from_pretrained(cls, path: str | Path | None = None, config: EngineConfig | None = None,
                        *, drafter: Any = None, **options: Any) -> "LLMEngine":
        """:meth:`from_config` with the model at ``path`` (default: the bundled demo model)
        and the keyword ``options`` (any :class:`EngineConfig` field) applied to ``config``."""
        if path is not None:
            options["model_name_or_path"] = path
        return cls.from_config(EngineConfig.build(config, **options), drafter=drafter)

    @classmethod
    def from_config(cls, config: EngineConfig, *, drafter: Any = None) -> "LLMEngine":
        """Set up the backend (``config.device``), load the checkpoint ``config.model_name_or_path``
        (default: the bundled demo model; a Hub id too), merge ``config.lora_path``, quantize
        with ``config.quant_type``, load the tokenizer, and build the engine.

        The model path may be a peft adapter folder (a ``--peft`` run's output): its base
        (``base_model_name_or_path``) is loaded and the adapter merged; so is the base of
        ``lora_path`` when no model path is given."""
        from ..modeling.auto import AutoModelForCausalLM, split_adapter_dir
        from ..plugin.device import setup_device
        from ..hub import resolve_model_path
        from ..plugin.manager import get_plugin_manager
        from ..tokenizer import AutoTokenizer

        setup_device(config.device, get_plugin_manager())
        path, lora_path = config.model_name_or_path, config.lora_path
        if path is None and lora_path and _names_its_base(lora_path):
            path, lora_path = lora_path, None  # --lora_path alone: on the base it names
        name = Path(path).name if path else None
        path = Path(resolve_model_path(path)) if path else default_model_path()  # Hub ids too
        base, adapter = split_adapter_dir(path)
        if adapter is not None:
            if config.lora_modules:
                raise ValueError(f"{path} is an adapter folder; serve its base with "
                                 "--lora_modules (a merged adapter and unmerged ones do not mix)")
            if lora_path:
                raise ValueError(f"{path} is an adapter folder; pass its base as the model "
                                 f"to add --lora_path {lora_path}")
            lora_path = adapter
        model = AutoModelForCausalLM.from_pretrained(base, dtype=config.dtype)
        if lora_path:
            from .loading import merge_lora

            model = merge_lora(model, lora_path)
        if config.quant_type:
            from .loading import quantize_for_inference

            model = quantize_for_inference(model, config.quant_type)
        if config.cachekv_int8_type == "static" and getattr(model, "kv_cache_quant", None) != "static":
            raise ValueError(f"--cachekv_int8_type static needs a checkpoint with calibrated "
                             f"KV-cache scales; {config.model_name_or_path or 'the demo model'} "
                             f"has none (make one with `llm quantize --quant_type a8w8c8`)")

        def has_tokenizer(folder: Path) -> bool:
            return any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "ice_text.model"))

        tok_dir = path if has_tokenizer(path) else Path(base)
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir)) if has_tokenizer(tok_dir) else None
        return cls(model, tokenizer, config, model_name=name or path.name, drafter=drafter)

    # -- requests ----------------------------------------------------------------------
    @owned
    def add_request(self, request_id: str, prompt_token_ids: list[int],
                    params: SamplingParams | None = None, adapter: str | None = None, *,
                    cache_salt: str | None = None) -> None:
        """Queue a request (``adapter``: the name of a served ``--lora_modules`` adapter, None
        for the base); ValueError when it cannot fit (length, ids, duplicate id, adapter).
        ``cache_salt``: reuse cached prefix blocks only among requests with the same salt
        (requests whose keys/values differ for equal tokens, or tenants kept apart); an
        adapter's requests are salted with its name as well."""
        params = params or SamplingParams()
        if adapter is not None and adapter not in self.adapter_names:
            raise ValueError(f"unknown adapter '{adapter}'; served adapters: "
                             f"{', '.join(self.adapter_names) or 'none'}")
        prompt = [int(t) for t in prompt_token_ids]
        vocab = self.model.config.vocab_size
        if not prompt:
            raise ValueError("the prompt is empty")
        if len(prompt) >= self.max_model_len:
            raise ValueError(f"prompt of {len(prompt)} tokens leaves no room to generate within "
                             f"the context length of {self.max_model_len} tokens")
        if min(prompt) < 0 or max(prompt) >= vocab:
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        longest = min(len(prompt) + params.max_tokens, self.max_model_len)
        if self.cache.blocks.blocks_needed(longest) > self.cache.num_blocks:
            raise ValueError(f"a sequence of {longest} tokens needs "
                             f"{self.cache.blocks.blocks_needed(longest)} KV blocks but the pool "
                             f"has {self.cache.num_blocks} (raise num_blocks)")
        if request_id in self._requests:
            raise ValueError(f"request id '{request_id}' is already in use")
        seq = Sequence(request_id, prompt, params, StopTracker(self.tokenizer, prompt, params.stop),
                       self.eos_ids, self.max_model_len, adapter=adapter,
                       cache_salt=_salt(adapter, cache_salt))
        self._requests[request_id] = seq
        self.scheduler.add(seq)
        self.counters["requests_added"] += 1
        self.counters["prompt_tokens"] += len(prompt)

    @owned
    def abort_request(self, request_id: str) -> bool:
        """Cancel a request and free its blocks now; the next :meth:`step` reports it once
        with ``finish_reason="abort"``. False when the id is unknown (or already finished)."""
        seq = self._requests.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.remove(request_id)
        seq.finish_reason = "abort"
        self.counters["requests_aborted"] += 1
        self._aborted.append(self._output(seq, [], "", None))
        return True

    @owned
    def has_unfinished_requests(self) -> bool:
        return bool(self._requests or self._aborted)

    def stats(self) -> dict[str, float]:
        """Counters and cache occupancy. The one method any thread may call: it only reads
        integers and copies a dict whose keys never change, so it is a consistent-enough
        snapshot for monitoring (at most one step stale)."""
        blocks = self.cache.blocks
        return {"num_running": len(self.scheduler.running),
                "num_waiting": len(self.scheduler.waiting),
                "kv_blocks_total": blocks.num_blocks, "kv_blocks_used": blocks.num_used,
                "kv_blocks_free": blocks.num_free, "block_size": blocks.block_size,
                "num_preemptions": self.scheduler.num_preemptions,
                # prefix caching: tokens looked up at admission and found cached (vLLM's
                # prefix_cache_queries / prefix_cache_hits), blocks holding reusable prefixes
                "prefix_caching": int(self.prefix_caching),
                "prefix_cache_queries": self.scheduler.prefix_cache_queries,
                "prefix_cache_hits": self.scheduler.prefix_cache_hits,
                "prefix_cache_hit_rate": (self.scheduler.prefix_cache_hits
                                          / max(self.scheduler.prefix_cache_queries, 1)),
                "kv_blocks_cached": blocks.num_cached,
                "max_num_seqs": self.scheduler.max_num_seqs, **self.counters,
                # tokens each running sequence gained per step (1 without speculation)
                "tokens_per_seq_step": (self.counters["seq_step_tokens"]
                                        / max(self.counters["seq_steps"], 1)),
                "spec_acceptance_rate": (self.counters["spec_accepted_tokens"]
                                         / max(self.counters["spec_draft_tokens"], 1))}

    # -- the step ----------------------------------------------------------------------
    @owned
    def step(self) -> list[RequestOutput]:
        """Schedule, run the model once, then give each scheduled sequence its next token
        (with speculation: its accepted drafts plus one token from the target)."""
        outputs, self._aborted = self._aborted, []
        batch = self.scheduler.schedule()
        if not batch:
            return outputs
        self.counters["steps"] += 1
        drafts = self._propose(batch)
        logits = self._execute(batch, drafts)  # (sum(1 + len(d)), V) float32
        return outputs + self._update(batch, logits, drafts)

    def _propose(self, batch: ScheduledBatch) -> list[list[int]]:
        """Draft tokens per scheduled sequence, with KV blocks allocated for them; never
        more than the request may still generate minus the target's own token, nor past
        the step's token budget (``max_num_batched_tokens``) or the free blocks."""
        drafts: list[list[int]] = [[] for _ in batch.seqs]
        if self.drafter is None:
            return drafts
        blocks = self.cache.blocks
        budget = self.scheduler.max_num_batched_tokens - sum(batch.num_new)  # tokens per step
        for i, seq in enumerate(batch.seqs):
            room = min(self.speculative.max_draft_token_num, budget,
                       seq.params.max_tokens - len(seq.output_ids) - 1,
                       seq.max_len - seq.length - 1)
            if room < 1:
                continue
            d = [int(t) for t in self.drafter.propose(seq.all_ids, room)][:room]
            vocab = self.model.config.vocab_size
            d = d[:next((j for j, t in enumerate(d) if not 0 <= t < vocab), len(d))]
            while d and not blocks.can_allocate(seq.request_id, seq.length + len(d)):
                d.pop()  # the pool is short: draft fewer rather than preempt anyone
            if d:
                blocks.allocate(seq.request_id, seq.length + len(d))
                drafts[i] = d
                budget -= len(d)
        return drafts

    def _execute(self, batch: ScheduledBatch, drafts: list[list[int]]):
        """One forward over every scheduled sequence's new tokens and drafts; the logits
        rows of each sequence's last new token and of each of its drafts, in order."""
        import paddle

        ids, pos, cached, fed, rows, adapter_rows = [], [], [], [], [], []
        for seq, n, d in zip(batch.seqs, batch.num_new, drafts):
            start = seq.length - n
            ids.extend(seq.all_ids[start:])
            ids.extend(d)
            if self.adapters is not None:
                adapter_rows.extend([self.adapters.index(seq.adapter)] * (n + len(d)))
            pos.append(self._positions(seq.all_ids + d, start, seq.length + len(d)))
            cached.append(start)
            fed.append(n + len(d))
            end = len(ids)  # rows of the last new token and every draft
            rows.extend(range(end - len(d) - 1, end))
        view = self.cache.batch([s.request_id for s in batch.seqs], cached, fed)
        input_ids = paddle.to_tensor(np.asarray(ids, dtype=np.int64)[None])  # (1, N)
        position_ids = paddle.to_tensor(np.concatenate(pos, axis=-1)[None])  # (1, [K,] N)
        with paddle.no_grad(), plain_transposes(self._plain_transposes), \
                self._adapter_rows(adapter_rows):
            hidden = self.model.forward_hidden(input_ids, position_ids=position_ids, cache=view)
            if len(rows) != hidden.shape[1]:
                hidden = paddle.index_select(hidden[0], paddle.to_tensor(np.asarray(rows)),
                                             axis=0)[None]
            logits = self.model.logits(hidden)[0].astype("float32")  # (R, V)
        for seq in batch.seqs:
            seq.num_cached = seq.length
            self.scheduler.commit(seq)  # its full blocks are written: reusable from now on
        return logits

    def _verify(self, seq: Sequence, draft: list[int], rows, greedy) -> tuple[list[int], list]:
        """The tokens this step emits for ``seq``: accepted drafts, then the target's token
        (see :mod:`.speculative`); with their logprobs when asked."""
        p = seq.params
        if rows is None:  # plain greedy: argmax computed on the device
            out = []
            for j, target in enumerate(int(t) for t in greedy):
                out.append(target)
                if j == len(draft) or draft[j] != target:
                    break
            return out, []
        out, lps = [], []
        for j in range(len(draft) + 1):
            row = repetition_penalty(rows[j], seq.all_ids + out, p.repetition_penalty)
            if j == len(draft):
                token, keep = sample_row(row, p, seq.rng), False
            elif p.greedy:
                token = sample_row(row, p, seq.rng)
                keep = token == draft[j]
            else:
                token, keep = accept_or_resample(target_probs(row, p.temperature, p.top_k, p.top_p),
                                                 draft[j], seq.rng)
            out.append(token)
            if p.logprobs is not None:
                lps.append(token_logprobs(rows[j], token, p.logprobs))
            if not keep:
                break
        return out, lps

    def _update(self, batch: ScheduledBatch, logits, drafts: list[list[int]]) -> list[RequestOutput]:
        import paddle

        host = any(s.params.needs_logits for s in batch.seqs)
        all_rows = logits.numpy() if host else None  # (R, V)
        if not host:  # paddle's argmax skips NaN: check each row's max (NaN, +inf or all -inf)
            check_logits(paddle.max(logits, axis=-1).numpy()[:, None])
        greedy = None if host else paddle.argmax(logits, axis=-1).numpy()  # (R,)
        outputs = []
        r = 0
        for seq, draft in zip(batch.seqs, drafts):
            p = seq.params
            span = slice(r, r + len(draft) + 1)
            r += len(draft) + 1
            tokens, lps = self._verify(seq, draft, None if all_rows is None else all_rows[span],
                                       None if greedy is None else greedy[span])
            self.counters["seq_steps"] += 1
            self.counters["seq_step_tokens"] += len(tokens)
            if draft:
                self.counters["spec_draft_tokens"] += len(draft)
                self.counters["spec_accepted_tokens"] += len(tokens) - 1
            emitted, text, reason, stopped = [], "", None, False
            for token in tokens:
                seq.output_ids.append(token)
                emitted.append(token)
                self.counters["generation_tokens"] += 1
                if token in seq.stop_ids:  # eos / stop token: not part of the text
                    reason = "stop"
                else:
                    piece, stopped = seq.tracker.push(token)
                    text += piece
                    if stopped:  # the text was cut before the stop string
                        reason = "stop"
                if reason is None and (len(seq.output_ids) >= p.max_tokens
                                       or seq.length >= seq.max_len):
                    reason = "length"
                if reason is not None:
                    break
            lps = lps[:len(emitted)] if p.logprobs is not None else None
            if reason is not None:
                if not stopped:
                    text += seq.tracker.finish()
                seq.finish_reason = reason
                self.scheduler.finish(seq)
                self._requests.pop(seq.request_id, None)
                self.counters["requests_finished"] += 1
            elif draft:  # rejected drafts: their keys/values are dropped with their blocks
                seq.num_cached = seq.length - 1
                self.cache.blocks.truncate(seq.request_id, seq.num_cached)
            outputs.append(self._output(seq, emitted, text, lps))
        return outputs

    def _output(self, seq: Sequence, tokens: list[int], text: str, lp) -> RequestOutput:
        return RequestOutput(seq.request_id, tokens, text, seq.finished, seq.finish_reason, lp,
                             len(seq.prompt_ids), len(seq.output_ids))

    @owned
    def score_prompts(self, prompts: Iterable[list[int]], top: int = 0,
                      adapter: str | None = None) -> list[list[dict]]:
        """Prompt-token log-probabilities (``echo`` with ``logprobs``; lm-evaluation-harness's
        loglikelihood): one cache-free forward over each prompt, no KV blocks used; per prompt
        one entry per token as :func:`~paddlellm.engine.sampling.next_token_logprobs` makes
        them, with the ``top`` most likely tokens at each position; the first token's logprob
        is ``None`` (nothing predicts it, as in OpenAI's and vLLM's ``echo``). Logits are
        computed :data:`SCORE_ROWS` rows at a time. ``adapter``: a served adapter's name (None:
        the base)."""
        import paddle

        if adapter is not None and adapter not in self.adapter_names:
            raise ValueError(f"unknown adapter '{adapter}'; served adapters: "
                             f"{', '.join(self.adapter_names) or 'none'}")
        vocab = self.model.config.vocab_size
        results = []
        for ids in prompts:
            ids = [int(t) for t in ids]
            if not ids:
                raise ValueError("cannot score an empty prompt")
            bad = [t for t in ids if not 0 <= t < vocab]
            if bad:
                raise ValueError(f"prompt token id {bad[0]} is outside the vocabulary (0..{vocab - 1})")
            entries = [{"token_id": ids[0], "logprob": None, "top": []}]
            index = self.adapters.index(adapter) if self.adapters is not None else 0
            with paddle.no_grad(), plain_transposes(self._plain_transposes), \
                    self._adapter_rows([index] * len(ids)):
                hidden = self.model.forward_hidden(
                    paddle.to_tensor(np.asarray(ids, dtype=np.int64)[None]),
                    position_ids=paddle.to_tensor(self._positions(ids, 0, len(ids))[None]))
                # logits a slice of rows at a time: (L, V) at once is gigabytes on long prompts
                for a in range(0, len(ids) - 1, SCORE_ROWS):
                    b = min(a + SCORE_ROWS, len(ids) - 1)
                    logits = self.model.logits(hidden[:, a:b])[0].astype("float32").numpy()
                    entries.extend(next_token_logprobs(logits, ids[a + 1:b + 1], top))
            results.append(entries)
        return results

    # -- convenience -------------------------------------------------------------------
    @owned
    def generate(self, prompts: Iterable[list[int]], params: SamplingParams | list[SamplingParams],
                 on_output=None, adapter: str | None | list[str | None] = None
                 ) -> list[dict[str, Any]]:
        """Run prompts to completion (all queued at once); per prompt
        ``{"token_ids", "text", "finish_reason", "logprobs"}`` in input order. ``adapter``: a
        served adapter's name for every prompt, or one per prompt (None: the base)."""
        prompts = list(prompts)
        plist = params if isinstance(params, list) else [params] * len(prompts)
        alist = adapter if isinstance(adapter, list) else [adapter] * len(prompts)
        if len(alist) != len(prompts):
            raise ValueError(f"{len(alist)} adapters for {len(prompts)} prompts")
        results = [{"token_ids": [], "text": "", "finish_reason": None, "logprobs": []}
                   for _ in prompts]
        base = f"gen-{id(results)}-"
        for i, (ids, p, a) in enumerate(zip(prompts, plist, alist)):
            self.add_request(f"{base}{i}", ids, p, adapter=a)
        while self.has_unfinished_requests():
            for out in self.step():
                r = results[int(out.request_id[len(base):])]
                r["token_ids"] += out.new_token_ids
                r["text"] += out.new_text
                r["logprobs"] += out.logprobs or []
                r["finish_reason"] = out.finish_reason
                if on_output is not None:
                    on_output(out)
        return results


    # -- beam search -------------------------------------------------------------------
    @owned
    def beam_search(self, prompts: Iterable[list[int]], num_beams: int,
                    max_tokens: int | list[int], *,
                    length_penalty: float = 1.0, early_stopping: bool = False,
                    repetition_penalty: float = 1.0, stop_token_ids: Iterable[int] = (),
                    ignore_eos: bool = False) -> list[dict[str, Any]]:
        """Beam search over the paged cache; per prompt ``{"token_ids", "text",
        "finish_reason", "logprobs"}`` of the best hypothesis, in input order. ``max_tokens``:
        one budget, or one per prompt (each also capped by the context length).

        The search is :func:`paddlellm.modeling.generation.generate`'s (transformers' rules: ``2 *
        num_beams`` candidates per step, finished hypotheses scored ``sum_logprobs /
        new_len ** length_penalty``, ``early_stopping`` as there), step by step the same
        function, so the result equals ``model.generate(decode_strategy="beam_search")`` on
        each prompt (tested). The beams of a prompt share its prompt blocks: the prompt is
        prefilled once, every beam's block table points at the same blocks (reference
        counted), beam reordering re-points tables, and a block that is still shared is
        copied only when a beam writes into it (copy-on-write). Prompts run in groups of
        ``max_num_seqs // num_beams`` (at least one).
        """
        from ..modeling.generation import _Hypotheses, beam_best, beam_step, make_config

        prompts = [[int(t) for t in p] for p in prompts]
        budgets = ([int(m) for m in max_tokens] if isinstance(max_tokens, (list, tuple))
                   else [int(max_tokens)] * len(prompts))
        if len(budgets) != len(prompts):
            raise ValueError(f"{len(budgets)} max_tokens for {len(prompts)} prompts")
        if num_beams < 2:
            raise ValueError(f"beam search needs num_beams >= 2, got {num_beams}")
        if prompts and min(budgets) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {min(budgets)}")
        stops = set(int(t) for t in stop_token_ids) | (set() if ignore_eos else set(self.eos_ids))
        cfg = make_config(self.model, decode_strategy="beam_search", num_beams=num_beams,
                          max_new_tokens=max(budgets, default=1), length_penalty=length_penalty,
                          early_stopping=early_stopping, eos_token_id=sorted(stops))
        vocab, blocks = self.model.config.vocab_size, self.cache.blocks
        for p in prompts:
            if not p or len(p) >= self.max_model_len or min(p) < 0 or max(p) >= vocab:
                raise ValueError(f"each prompt needs 1..{self.max_model_len - 1} token ids in "
                                 f"[0, {vocab})")

        limits = [min(m, self.max_model_len - len(p)) for m, p in zip(budgets, prompts)]

        def need(i: int) -> int:  # blocks for one prompt's beams at full length: the full
            # prompt blocks are shared (never written again), every other block is one beam's
            p = prompts[i]
            full = len(p) // blocks.block_size
            end = len(p) + limits[i]
            return full + num_beams * (blocks.blocks_needed(end) - full)

        results: list[dict[str, Any]] = [None] * len(prompts)  # type: ignore[list-item]
        i = 0
        while i < len(prompts):
            group, budget = [], blocks.num_free
            while (i + len(group) < len(prompts) and len(group) * num_beams < max(
                    self.scheduler.max_num_seqs, num_beams)):
                cost = need(i + len(group))
                if cost > budget:
                    break
                group.append(i + len(group))
                budget -= cost
            if not group:
                raise ValueError(f"beam search of a {len(prompts[i])}-token prompt with "
                                 f"{num_beams} beams needs {need(i)} KV blocks; "
                                 f"{blocks.num_free} are free (raise num_blocks)")
            for j, res in zip(group, self._beam_group(
                    [prompts[j] for j in group], [limits[j] for j in group], cfg,
                    repetition_penalty, _Hypotheses, beam_step, beam_best)):
                results[j] = res
            i += len(group)
        return results

    def _beam_group(self, prompts, limits, cfg, penalty, hyp_class, beam_step, beam_best):
        import paddle

        nb, blocks, g = cfg.num_beams, self.cache.blocks, len(prompts)
        tag = f"beam-{id(prompts)}"
        prompt_ids = [f"{tag}-{b}" for b in range(g)]
        beam_ids = [[f"{tag}-{b}-{j}" for j in range(nb)] for b in range(g)]
        self.counters["requests_added"] += g
        self.counters["prompt_tokens"] += sum(map(len, prompts))
        try:
            hashes, starts = [], []
            for sid, p in zip(prompt_ids, prompts):  # each prompt from its cached prefix
                hashes.append(prefix_hashes(p, blocks.block_size) if self.prefix_caching else [])
                prefix = blocks.lookup(hashes[-1][:(len(p) - 1) // blocks.block_size])
                blocks.allocate(sid, len(p), prefix)
                starts.append(len(prefix) * blocks.block_size)
                if self.prefix_caching:
                    self.scheduler.prefix_cache_queries += len(p)
                    self.scheduler.prefix_cache_hits += starts[-1]
            logits = self._forward_last(prompt_ids, starts,
                                        [p[s:] for p, s in zip(prompts, starts)], prompts)  # (g, V)
            for sid, h in zip(prompt_ids, hashes):
                blocks.commit(sid, h)
            logits = paddle.index_select(logits, paddle.to_tensor(np.repeat(np.arange(g), nb)),
                                         axis=0)  # (g * nb, V): every beam starts alike
            for b in range(g):
                for bid in beam_ids[b]:
                    blocks.fork(prompt_ids[b], bid)
                blocks.free(prompt_ids[b])
            hyps = [hyp_class(nb, cfg.length_penalty, cfg.early_stopping) for _ in range(g)]
            done = np.zeros(g, dtype=bool)
            scores = np.zeros((g, nb), dtype=np.float32)
            scores[:, 1:] = -1e9  # expand from the first beam only, as generate
            seqs: list[list[int]] = [[] for _ in range(g * nb)]
            for step in range(max(limits)):
                self.counters["steps"] += 1
                if penalty != 1.0:
                    rows = logits.numpy()
                    rows = np.stack([repetition_penalty(rows[k], prompts[k // nb] + seqs[k], penalty)
                                     for k in range(g * nb)])
                    logits = paddle.to_tensor(rows)
                was_done = done.copy()
                scores, tokens, sources, seqs = beam_step(logits, scores, seqs, hyps, done, cfg, step)
                for b in range(g):  # a prompt whose budget ends here: its live beams compete
                    if not done[b] and step == limits[b] - 1:
                        beam_best([hyps[b]], seqs[b * nb:(b + 1) * nb], scores[b:b + 1],
                                  np.zeros(1, dtype=bool))
                        done[b] = True
                for b in np.flatnonzero(done & ~was_done):
                    for bid in beam_ids[b]:
                        blocks.free(bid)
                if done.all():
                    break
                active = np.flatnonzero(~done)
                ids, starts, feed, copies, histories = [], [], [], [], []
                for b in active:
                    blocks.reassign(beam_ids[b], (sources[b] - b * nb).tolist())
                    for j, bid in enumerate(beam_ids[b]):
                        pos = len(prompts[b]) + step
                        copies += blocks.prepare_write(bid, pos, pos + 1)
                        ids.append(bid)
                        starts.append(pos)
                        feed.append([int(tokens[b, j])])
                        histories.append(prompts[b] + seqs[b * nb + j])
                self.cache.copy_blocks(copies)
                out = self._forward_last(ids, starts, feed, histories)  # (active * nb, V)
                rows = np.concatenate([np.arange(b * nb, (b + 1) * nb) for b in active])
                logits = paddle.scatter(paddle.zeros([g * nb, out.shape[-1]], dtype="float32"),
                                        paddle.to_tensor(rows), out, overwrite=True)
        finally:
            for sid in prompt_ids + [bid for row in beam_ids for bid in row]:
                blocks.free(sid)
        best = [max(h.beams, key=lambda x: x[0])[1] for h in hyps]
        results = []
        stops = set(cfg.eos_ids)
        for p, tokens in zip(prompts, best):
            stopped = bool(tokens) and tokens[-1] in stops
            tracker = StopTracker(self.tokenizer, p, [])
            text = "".join(tracker.push(t)[0] for t in (tokens[:-1] if stopped else tokens))
            results.append({"token_ids": list(tokens), "text": text + tracker.finish(),
                            "finish_reason": "stop" if stopped else "length", "logprobs": []})
            self.counters["generation_tokens"] += len(tokens)
            self.counters["requests_finished"] += 1
        return results

    def _positions(self, tokens: list[int], start: int, end: int) -> np.ndarray:
        """Position ids of tokens ``start..end-1`` of a sequence whose tokens are ``tokens``:
        the model's own (``sequence_positions``; GLM's are 2D and depend on the tokens), else
        ``arange``. ``(T,)`` or ``(K, T)``."""
        of = getattr(self.model, "sequence_positions", None)
        if of is None:
            return np.arange(start, end, dtype=np.int64)
        return np.asarray(of(tokens, start, end), dtype=np.int64)

    def _forward_last(self, seq_ids: list[str], starts: list[int], tokens: list[list[int]],
                      histories: list[list[int]]):
        """Feed ``tokens[s]`` at positions ``starts[s]..`` of sequence ``seq_ids[s]`` (blocks
        allocated; ``histories[s]``: all its tokens up to the fed ones); the float32 logits
        ``(S, V)`` of each sequence's last fed token."""
        import paddle

        ids = [t for toks in tokens for t in toks]
        pos = [self._positions(h, st, st + len(toks))
               for h, st, toks in zip(histories, starts, tokens)]
        view = self.cache.batch(seq_ids, starts, [len(t) for t in tokens])
        with paddle.no_grad(), plain_transposes(self._plain_transposes):
            hidden = self.model.forward_hidden(
                paddle.to_tensor(np.asarray(ids, dtype=np.int64)[None]),
                position_ids=paddle.to_tensor(np.concatenate(pos, axis=-1)[None]), cache=view)
            last = np.cumsum([len(t) for t in tokens]) - 1
            if len(last) != hidden.shape[1]:
                hidden = paddle.index_select(hidden[0], paddle.to_tensor(last), axis=0)[None]
            return self.model.logits(hidden)[0].astype("float32")


def _use_attention_kernel(name: str, head_dim: int, dtype: Any) -> None:
    """``--attention_kernel NAME``: check that NAME serves the engine's paged attention on
    this backend, then make it the process's kernel (``auto`` leaves the choice to the
    ``select_attention_kernel`` hook, or to a kernel the process named before)."""
    if name == "auto":
        return
    from ..modeling import attention
    from ..interfaces import AttentionSpec

    spec = AttentionSpec(dtype=str(dtype).replace("paddle.", ""), head_dim=head_dim,
                         cache="paged")
    attention.get_attention_kernel(spec, name=name)  # UnknownPluginError naming what is wrong
    attention.set_default_kernel(name)


def _prefix_caching_off_reason(model: Any, cache: Any) -> str | None:
    """Why reusing cached prefix blocks could change this model's outputs (None: it cannot).

    Reuse is exact when a position's cached keys/values depend only on the tokens up to it
    (and the salt): true of the float pool and of any pool that says so
    (``supports_prefix_caching``, e.g. the int8 pool with per-head or per-token scales). A
    tuned prefix (prefix tuning) adds keys that are not the tokens'."""
    if getattr(model, "prefix_kv", None) is not None:
        return "prefix tuning: the tuned prefix is not part of the token blocks"
    if getattr(getattr(model, "config", None), "prefix_lm", False):
        return ("prefix-LM attention (GLM): a position's keys depend on the whole context "
                "before <sop>, not only on the tokens up to it")
    if type(cache) is not PagedKVCache and not getattr(cache, "supports_prefix_caching", False):
        return (f"the KV pool {type(cache).__name__} does not declare supports_prefix_caching "
                "(its stored keys/values may depend on more than their own tokens)")
    return None


def _salt(adapter: str | None, cache_salt: str | None) -> str | None:
    """The prefix-cache salt of a request: its adapter's name (keys/values differ per
    adapter) combined with the caller's ``cache_salt``."""
    if adapter is None:
        return cache_salt
    return f"adapter:{adapter}" + ("" if cache_salt is None else f"\x00{cache_salt}")


def _names_its_base(adapter: str | Path) -> bool:
    from ..modeling.peft import read_adapter_config

    return bool(read_adapter_config(adapter).get("base_model_name_or_path"))


def default_model_path() -> Path:
    """The bundled instruction-tuned demo model (``paddlellm/assets/qwen-demo-instruct``),
    the inference commands' default."""
    from ..modeling.prepare import INSTRUCT_DEMO_MODEL

    return INSTRUCT_DEMO_MODEL

