"""The paged KV cache: a pool of fixed-size blocks, per-sequence block tables, and the
per-call view the attention kernel reads (:class:`paddlellm.interfaces.PagedKVCacheLayer`).

:class:`BlockManager` is host bookkeeping only (which block belongs to whom, and which full
blocks hold a reusable prefix); :class:`PagedKVCache` owns the preallocated
``(num_blocks * block_size, Hkv, D)`` pools of every layer and builds one
:class:`PagedBatch` per engine step.

Prefix caching (vLLM's automatic prefix caching): a full block whose keys/values are
computed is *committed* under a chained content hash (:func:`hash_block`: the parent
block's hash, the block's token ids and the request's cache salt), so a later sequence
whose first blocks hash the same takes those blocks (reference counted) instead of
computing them again. A committed block nobody holds stays in the pool, evictable, and is
reclaimed least recently used first when a fresh block is needed. Only full blocks are
ever committed, and only after they are written: the block a sequence is still writing
is always its own.
"""
from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import numpy as np

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1}  # int8: quantized KV pools
DEFAULT_KV_CACHE_BYTES = 1 << 30  # budget when neither num_blocks nor a budget is given


def block_bytes(num_layers: int, block_size: int, kv_heads: int, head_dim: int,
                dtype: str = "float32") -> int:
    """Bytes of one block across all layers (keys and values)."""
    return 2 * num_layers * block_size * kv_heads * head_dim * DTYPE_BYTES[dtype]


def num_blocks_for_budget(budget_bytes: int, num_layers: int, block_size: int, kv_heads: int,
                          head_dim: int, dtype: str, max_model_len: int, max_num_seqs: int,
                          extra_bytes_per_token: int = 0) -> int:
    """Blocks that fit ``budget_bytes``, never fewer than one full-length sequence needs and
    never more than ``max_num_seqs`` full-length sequences can use. ``extra_bytes_per_token``:
    what a layout stores per cached token beside the keys and values (all layers)."""
    per_seq = math.ceil(max_model_len / block_size)
    per_block = block_bytes(num_layers, block_size, kv_heads, head_dim, dtype) + block_size * extra_bytes_per_token
    fit = budget_bytes // per_block
    return int(max(per_seq, min(fit, per_seq * max_num_seqs)))


def hash_block(parent: bytes | None, tokens: Sequence[int], salt: str | None = None) -> bytes:
    """The chained content hash of one full block: SHA-256 over the parent block's hash
    (``None`` for a sequence's first block), the cache ``salt`` (e.g. a LoRA adapter's name:
    equal tokens under different salts never share keys/values) and the block's token ids.
    A cryptographic hash, so no crafted prompt can collide with another's prefix."""
    h = hashlib.sha256(parent if parent is not None else b"\x00" * 32)
    if salt is None:
        h.update(b"\xff" * 8)
    else:
        raw = salt.encode("utf-8")
        h.update(len(raw).to_bytes(8, "little") + raw)
    h.update(np.asarray(tokens, dtype="<i8").tobytes())
    return h.digest()


def prefix_hashes(tokens: Sequence[int], block_size: int, salt: str | None = None) -> list[bytes]:
    """The chained hashes of the full blocks of ``tokens`` (:func:`hash_block`)."""
    hashes: list[bytes] = []
    for i in range(len(tokens) // block_size):
        hashes.append(hash_block(hashes[-1] if hashes else None,
                                 tokens[i * block_size:(i + 1) * block_size], salt))
    return hashes


class BlockManager:
    """Free list of block ids, the block table of every sequence, and a reference count per
    block: beams of one beam search share blocks (:meth:`reassign`) and copy a shared block
    before writing into it (:meth:`prepare_write`, copy-on-write); sequences with a common
    prefix share its committed blocks (:meth:`lookup`, :meth:`allocate` with ``prefix``,
    :meth:`commit`; see the module docstring).

    ``num_free`` counts every block a new allocation may take: never-committed free blocks
    plus committed blocks that no table holds (evicted on demand, least recently used
    first)."""

    def __init__(self, num_blocks: int, block_size: int) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError(f"num_blocks ({num_blocks}) and block_size ({block_size}) must be >= 1")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free: list[int] = list(range(num_blocks - 1, -1, -1))  # pop() gives 0, 1, ...
        self.tables: dict[str, list[int]] = {}
        self.refs = [0] * num_blocks  # tables holding each block
        # prefix caching: the hash each committed block is known by, the block of each hash,
        # the committed blocks no table holds (oldest release first), and per table how many
        # leading blocks are committed
        self.block_hash: list[bytes | None] = [None] * num_blocks
        self._by_hash: dict[bytes, int] = {}
        self._evictable: OrderedDict[int, None] = OrderedDict()
        self._committed: dict[str, int] = {}
        self.num_evictions = 0

    # -- queries ------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self._free) + len(self._evictable)

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def num_cached(self) -> int:
        """Committed blocks (held or evictable): the prefixes a new sequence can reuse."""
        return len(self._by_hash)

    def blocks_needed(self, num_tokens: int) -> int:
        return math.ceil(num_tokens / self.block_size)

    def extra_blocks(self, seq_id: str, num_tokens: int) -> int:
        """Blocks ``seq_id`` must still get to hold ``num_tokens`` tokens."""
        have = len(self.tables.get(seq_id, ()))
        return max(0, self.blocks_needed(num_tokens) - have)

    def can_allocate(self, seq_id: str, num_tokens: int, prefix: Sequence[int] = ()) -> bool:
        """Whether :meth:`allocate` of ``num_tokens`` tokens (starting from the committed
        ``prefix`` blocks for a new table) would succeed."""
        if not prefix:
            return self.extra_blocks(seq_id, num_tokens) <= self.num_free
        reclaimed = sum(1 for b in prefix if self.refs[b] == 0)  # evictable ones it revives
        return self.blocks_needed(num_tokens) - len(prefix) + reclaimed <= self.num_free

    def lookup(self, hashes: Sequence[bytes]) -> list[int]:
        """The committed blocks of the longest prefix of ``hashes`` (the chained hashes of a
        sequence's first full blocks, :func:`hash_block`); nothing is claimed."""
        found = []
        for h in hashes:
            block = self._by_hash.get(h)
            if block is None:
                break
            found.append(block)
        return found

    # -- changes ------------------------------------------------------------------------
    def allocate(self, seq_id: str, num_tokens: int, prefix: Sequence[int] = ()) -> list[int]:
        """Grow ``seq_id``'s table to hold ``num_tokens`` tokens; returns the table. A new
        table may start with ``prefix``: committed blocks from :meth:`lookup`, shared (their
        keys/values are not computed again)."""
        if prefix:
            if seq_id in self.tables:
                raise ValueError(f"sequence '{seq_id}' already has blocks; a cached prefix "
                                 "starts a new table")
            if not self.can_allocate(seq_id, num_tokens, prefix):
                raise MemoryError(f"KV cache: {self.blocks_needed(num_tokens) - len(prefix)} "
                                  f"blocks needed, {self.num_free} free")
            for block in prefix:
                if self.block_hash[block] is None:
                    raise ValueError(f"block {block} holds no committed prefix")
                if self.refs[block] == 0:
                    del self._evictable[block]
                self.refs[block] += 1
            self.tables[seq_id] = list(prefix)
            self._committed[seq_id] = len(prefix)
        extra = self.extra_blocks(seq_id, num_tokens)
        if extra > self.num_free:
            raise MemoryError(f"KV cache: {extra} blocks needed, {self.num_free} free")
        table = self.tables.setdefault(seq_id, [])
        for _ in range(extra):
            table.append(self._take())
        return table

    def commit(self, seq_id: str, hashes: Sequence[bytes]) -> int:
        """Record that the first ``len(hashes)`` blocks of ``seq_id``'s table hold the
        computed keys/values of the full blocks those chained hashes name, so later
        sequences may reuse them. A block whose hash another block already has stays
        private (no duplicates). The number of blocks newly committed."""
        table = self.tables[seq_id]
        if len(hashes) > len(table):
            raise ValueError(f"{len(hashes)} block hashes for a table of {len(table)} blocks")
        done = self._committed.get(seq_id, 0)
        added = 0
        for i in range(done, len(hashes)):
            block, h = table[i], hashes[i]
            if self.block_hash[block] is None and h not in self._by_hash:
                self.block_hash[block] = h
                self._by_hash[h] = block
                added += 1
        self._committed[seq_id] = max(done, len(hashes))
        return added

    def _take(self) -> int:
        """A fresh block: a never-committed free one, else the least recently released
        committed one (its hash forgotten)."""
        if self._free:
            block = self._free.pop()
        else:
            block, _ = self._evictable.popitem(last=False)
            del self._by_hash[self.block_hash[block]]
            self.block_hash[block] = None
            self.num_evictions += 1
        self.refs[block] = 1
        return block

    def _release(self, blocks: list[int]) -> int:
        """Drop one reference to each of ``blocks``; those left unreferenced return to the
        pool (in reverse, so a freed table is reused in order; committed ones become
        evictable, a table's last blocks first). The number returned."""
        back, evictable = [], 0
        for block in reversed(blocks):
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if self.block_hash[block] is not None:
                    self._evictable[block] = None
                    evictable += 1
                else:
                    back.append(block)
        self._free.extend(back)
        return len(back) + evictable

    def free(self, seq_id: str) -> int:
        """Drop ``seq_id``'s table; its blocks no other table holds return to the pool (the
        number returned)."""
        self._committed.pop(seq_id, None)
        return self._release(self.tables.pop(seq_id, []))

    def fork(self, src: str, dst: str) -> None:
        """``dst`` gets ``src``'s table, sharing its blocks (no copy until a write)."""
        if dst in self.tables:
            raise ValueError(f"sequence '{dst}' already has blocks")
        table = list(self.tables[src])
        for block in table:
            self.refs[block] += 1
        self.tables[dst] = table
        self._committed[dst] = self._committed.get(src, 0)

    def reassign(self, seq_ids: list[str], sources: list[int]) -> None:
        """Beam reordering: ``seq_ids[k]`` takes the table ``seq_ids[sources[k]]`` had
        (shared), then the old tables are dropped."""
        old = [self.tables[s] for s in seq_ids]
        new = [list(old[src]) for src in sources]
        committed = [self._committed.get(seq_ids[src], 0) for src in sources]
        for table in new:
            for block in table:
                self.refs[block] += 1
        for table in old:
            self._release(table)
        for s, table, done in zip(seq_ids, new, committed):
            self.tables[s] = table
            self._committed[s] = done

    def prepare_write(self, seq_id: str, start: int, end: int) -> list[tuple[int, int]]:
        """Make ``seq_id`` own the blocks of positions ``start..end-1`` before they are
        written: grow its table, and replace every block there that another table shares by
        a fresh one. Returns the ``(shared, fresh)`` pairs whose contents must be copied."""
        self.allocate(seq_id, end)
        table = self.tables[seq_id]
        copies = []
        for i in range(start // self.block_size, self.blocks_needed(end)):
            block = table[i]
            if self.refs[block] > 1:
                if not self.num_free:
                    raise MemoryError("KV cache: no free block to copy a shared block into")
                fresh = self._take()
                self.refs[block] -= 1
                table[i] = fresh
                copies.append((block, fresh))
                if i < self._committed.get(seq_id, 0):  # the private copy is not committed
                    self._committed[seq_id] = i
        return copies

    def truncate(self, seq_id: str, num_tokens: int) -> int:
        """Keep only the blocks ``seq_id`` needs for its first ``num_tokens`` tokens (after
        rejected speculative tokens); the blocks left empty go back to the pool. The number
        freed."""
        table = self.tables.get(seq_id)
        if table is None:
            return 0
        keep = self.blocks_needed(num_tokens)
        dropped = table[keep:]
        del table[keep:]
        if self._committed.get(seq_id, 0) > keep:
            self._committed[seq_id] = keep
        return self._release(dropped)

    def slots(self, seq_id: str, start: int, end: int) -> np.ndarray:
        """Pool slots of token positions ``start..end-1`` of ``seq_id``."""
        table = np.asarray(self.tables[seq_id], dtype=np.int64)
        pos = np.arange(start, end, dtype=np.int64)
        return table[pos // self.block_size] * self.block_size + pos % self.block_size


@dataclass
class PagedLayer:
    """One layer's view for one call; implements :class:`~paddlellm.interfaces.PagedKVCacheLayer`."""

    batch: "PagedBatch"
    key_pool: object
    value_pool: object
    paged = True

    def __getattr__(self, name):  # metadata shared by all layers lives on the batch
        if name in ("batch", "key_pool", "value_pool"):
            raise AttributeError(name)
        return getattr(self.batch, name)

    def write(self, k, v) -> None:
        import paddle

        n = k.shape[1]
        k = k.reshape([n, k.shape[2], k.shape[3]]).astype(self.key_pool.dtype)  # (N, Hkv, D)
        v = v.reshape([n, v.shape[2], v.shape[3]]).astype(self.value_pool.dtype)  # (N, Hkv, D)
        paddle.scatter_(self.key_pool, self.batch.slot_mapping, k, overwrite=True)
        paddle.scatter_(self.value_pool, self.batch.slot_mapping, v, overwrite=True)

    def __len__(self) -> int:
        return int(sum(self.batch.context_lens_host))


class PagedBatch:
    """Metadata of one engine step (shared by all layers) plus the layer views.

    Passed to the model as ``cache``: ``cache[i]`` is layer ``i``'s :class:`PagedLayer`.
    """

    paged = True
    seq_length = 0  # positions come explicitly from the engine

    def __init__(self, cache: "PagedKVCache", block_tables: list[list[int]],
                 context_lens: list[int], query_lens: list[int], slot_mapping: np.ndarray) -> None:
        import paddle

        self.block_size = cache.block_size
        self.query_lens = list(query_lens)
        self.query_start = [0, *np.cumsum(query_lens)[:-1].tolist()]
        self.context_lens_host = list(context_lens)
        self.max_query_len = max(query_lens)
        self.max_context_len = max(context_lens)
        width = max(len(t) for t in block_tables)
        tables = np.zeros((len(block_tables), width), dtype=np.int64)
        for i, t in enumerate(block_tables):
            tables[i, :len(t)] = t
        self.block_tables = paddle.to_tensor(tables)  # (S, max_blocks)
        self.context_lens = paddle.to_tensor(np.asarray(context_lens, dtype=np.int64))  # (S,)
        self.slot_mapping = paddle.to_tensor(slot_mapping.astype(np.int64))  # (N,)
        self.scratch: dict = {}
        self._layers = [PagedLayer(self, k, v) for k, v in zip(cache.key_pools, cache.value_pools)]

    def __getitem__(self, i: int) -> PagedLayer:
        return self._layers[i]

    def __len__(self) -> int:
        return len(self._layers)


class PagedKVCache:
    """Preallocated key/value pools of every layer plus their :class:`BlockManager`."""

    def __init__(self, num_layers: int, num_blocks: int, block_size: int, kv_heads: int,
                 head_dim: int, dtype: str = "float32") -> None:
        import paddle

        self.num_layers, self.block_size, self.dtype = num_layers, block_size, dtype
        self.kv_heads, self.head_dim = kv_heads, head_dim
        self.blocks = BlockManager(num_blocks, block_size)
        slots = num_blocks * block_size
        self.key_pools = [paddle.zeros([slots, kv_heads, head_dim], dtype=dtype)
                          for _ in range(num_layers)]  # (num_slots, Hkv, D) each
        self.value_pools = [paddle.zeros([slots, kv_heads, head_dim], dtype=dtype)
                            for _ in range(num_layers)]

    @property
    def num_blocks(self) -> int:
        return self.blocks.num_blocks

    @property
    def nbytes(self) -> int:
        return self.num_blocks * block_bytes(self.num_layers, self.block_size, self.kv_heads,
                                             self.head_dim, self.dtype)

    def copy_blocks(self, pairs: list[tuple[int, int]]) -> None:
        """Copy the keys/values of block ``src`` into block ``dst`` for every ``(src, dst)``
        (copy-on-write of blocks shared by beams), in every layer."""
        import paddle

        if not pairs:
            return
        if type(self) is not PagedKVCache and not getattr(self, "supports_block_copy", False):
            raise ValueError(f"{type(self).__name__} cannot copy blocks (beam search needs a "
                             "plain float KV cache)")
        bs = self.block_size
        src = np.concatenate([np.arange(a * bs, (a + 1) * bs) for a, _ in pairs])
        dst = np.concatenate([np.arange(b * bs, (b + 1) * bs) for _, b in pairs])
        src_t, dst_t = paddle.to_tensor(src), paddle.to_tensor(dst)
        for pool in (*self.key_pools, *self.value_pools):
            paddle.scatter_(pool, dst_t, paddle.gather(pool, src_t), overwrite=True)

    def batch(self, seq_ids: list[str], cached: list[int], new: list[int]) -> PagedBatch:
        """The view for one call: sequence ``seq_ids[s]`` has ``cached[s]`` keys in the pool
        and writes ``new[s]`` more (its blocks must already be allocated)."""
        slots = np.concatenate([self.blocks.slots(s, c, c + n)
                                for s, c, n in zip(seq_ids, cached, new)])  # (N,)
        tables = [self.blocks.tables[s] for s in seq_ids]
        return PagedBatch(self, tables, [c + n for c, n in zip(cached, new)], new, slots)
