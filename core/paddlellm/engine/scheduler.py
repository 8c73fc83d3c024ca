"""Continuous batching: which sequences run in the next step, and with how many tokens.

Every step runs the decode token of each running sequence plus the whole prefill of newly
admitted ones (prompt, or prompt + generated tokens after a preemption), all in one forward
call. When a running sequence needs a block and none is free, the youngest running sequence
is preempted by recomputation: its blocks are freed and it goes back to the front of the
waiting queue with its generated tokens, to be prefilled again later. Nothing crashes for
lack of blocks; a request that could never fit is refused when it is added.

With prefix caching (``Scheduler(..., prefix_caching=True)``) a waiting sequence is admitted
with the longest run of its leading full blocks that are committed in the pool
(:meth:`BlockManager.lookup`): those positions count as cached and only the rest is
prefilled (its last token always is: its logits give the first output). After each step
the engine commits the full blocks a sequence has computed (:meth:`Scheduler.commit`).
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..modeling.kv_manager import BlockManager, hash_block
from .sampling import SamplingParams, StopTracker

_arrival = itertools.count()


@dataclass(eq=False)
class Sequence:
    """One request's state."""

    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    tracker: StopTracker
    eos_ids: frozenset[int]
    max_len: int  # prompt + output may not exceed this (max_model_len)
    output_ids: list[int] = field(default_factory=list)
    num_cached: int = 0  # tokens whose keys/values are in the pool
    finish_reason: str | None = None
    arrival: int = field(default_factory=lambda: next(_arrival))
    adapter: str | None = None  # the served LoRA adapter it runs with (None: the base)
    #: part of every block hash (prefix caching): requests whose keys/values differ for the
    #: same tokens (another LoRA adapter, another tenant) carry different salts
    cache_salt: str | None = None

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.params.seed)
        self.stop_ids = frozenset(self.params.stop_token_ids) | (
            frozenset() if self.params.ignore_eos else self.eos_ids)
        self._block_hashes: list[bytes] = []

    def block_hashes(self, block_size: int, num_tokens: int) -> list[bytes]:
        """Chained hashes (:func:`~.kv_manager.hash_block`) of the full blocks among the
        first ``num_tokens`` tokens; each computed once (tokens are only ever appended)."""
        full = min(num_tokens, self.length) // block_size
        hashes = self._block_hashes
        if len(hashes) < full:
            ids = self.all_ids
            for i in range(len(hashes), full):
                hashes.append(hash_block(hashes[-1] if hashes else None,
                                         ids[i * block_size:(i + 1) * block_size], self.cache_salt))
        return hashes[:full]

    @property
    def all_ids(self) -> list[int]:
        return self.prompt_ids + self.output_ids

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class ScheduledBatch:
    seqs: list[Sequence]
    num_new: list[int]  # tokens each sequence feeds this step
    num_prefill_tokens: int = 0
    num_decode: int = 0

    def __bool__(self) -> bool:
        return bool(self.seqs)


class Scheduler:
    """Waiting queue (FIFO) and running set over a :class:`BlockManager`; with
    ``prefix_caching`` admissions reuse committed prefix blocks (module docstring)."""

    def __init__(self, blocks: BlockManager, max_num_seqs: int = 64,
                 max_num_batched_tokens: int = 4096, prefix_caching: bool = False) -> None:
        self.blocks = blocks
        self.max_num_seqs, self.max_num_batched_tokens = max_num_seqs, max_num_batched_tokens
        self.prefix_caching = prefix_caching
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # by arrival, oldest first
        self.num_preemptions = 0
        # prefix caching, in tokens: looked up at admission, and found cached
        self.prefix_cache_queries = self.prefix_cache_hits = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, request_id: str) -> Sequence | None:
        """Take a request out of either queue and free its blocks (abort)."""
        for seq in self.running:
            if seq.request_id == request_id:
                self.running.remove(seq)
                self.blocks.free(request_id)
                return seq
        for seq in self.waiting:
            if seq.request_id == request_id:
                self.waiting.remove(seq)
                self.blocks.free(request_id)
                return seq
        return None

    def finish(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.request_id)

    def commit(self, seq: Sequence) -> None:
        """Commit the full blocks of ``seq``'s cached tokens (``num_cached``, whose keys and
        values are written) for reuse by later sequences; a no-op without prefix caching."""
        if self.prefix_caching:
            self.blocks.commit(seq.request_id, seq.block_hashes(self.blocks.block_size,
                                                                seq.num_cached))

    def _cached_prefix(self, seq: Sequence) -> list[int]:
        """Committed blocks ``seq`` can start from: full blocks before its last token (which
        is always computed, for its logits)."""
        if not self.prefix_caching:
            return []
        return self.blocks.lookup(seq.block_hashes(self.blocks.block_size, seq.length - 1))

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.request_id)
        seq.num_cached = 0
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch([], [])
        # 1. decodes, oldest first; make room by preempting the youngest (latest arrival)
        preempted = False
        for seq in list(self.running):
            if seq not in self.running:  # preempted below to make room for an older one
                continue
            while not self.blocks.can_allocate(seq.request_id, seq.length):
                victim = self.running[-1]
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq in self.running:
                self.blocks.allocate(seq.request_id, seq.length)
                batch.seqs.append(seq)
                batch.num_new.append(seq.length - seq.num_cached)
                batch.num_decode += 1
        # 2. admit waiting requests (whole prefill) while blocks, slots and budget allow
        budget = self.max_num_batched_tokens - batch.num_decode
        while self.waiting and not preempted and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            need = seq.length
            prefix = self._cached_prefix(seq)
            cached = len(prefix) * self.blocks.block_size
            if need - cached > budget and batch.seqs:
                break
            if not self.blocks.can_allocate(seq.request_id, need, prefix):
                break
            self.waiting.popleft()
            self.blocks.allocate(seq.request_id, need, prefix)
            seq.num_cached = cached
            if self.prefix_caching:
                self.prefix_cache_queries += need
                self.prefix_cache_hits += cached
            self.running.append(seq)
            self.running.sort(key=lambda s: s.arrival)
            batch.seqs.append(seq)
            batch.num_new.append(need - cached)
            batch.num_prefill_tokens += need - cached
            budget -= need - cached
        if preempted and not batch.seqs and self.waiting:  # everything was preempted
            return self.schedule()
        return batch
