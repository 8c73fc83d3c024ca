"""Language-model batches: documents -> one token stream -> fixed-length blocks."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


def pack_documents(docs: Sequence[Sequence[int]], block_len: int, eos_id: int | None,
                   drop_last: bool = True) -> np.ndarray:
    """Concatenate documents (each followed by ``eos_id``) and cut ``(N, block_len)`` blocks."""
    stream: list[int] = []
    for doc in docs:
        stream.extend(doc)
        if eos_id is not None:
            stream.append(eos_id)
    n_blocks = len(stream) // block_len if drop_last else -(-len(stream) // block_len)
    if n_blocks == 0:
        raise ValueError(f"not enough tokens ({len(stream)}) for one block of {block_len}")
    arr = np.full(n_blocks * block_len, eos_id if eos_id is not None else 0, dtype=np.int64)
    usable = min(len(stream), n_blocks * block_len)
    arr[:usable] = stream[:usable]
    return arr.reshape(n_blocks, block_len)


def block_batches(blocks: np.ndarray, batch_size: int, *, seed: int,
                  shard: Sequence[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled ``{"input_ids", "labels"}`` batches; a new order every epoch.

    ``shard`` restricts to those block indices (a data-parallel rank's part).
    """
    index = np.asarray(shard if shard is not None else range(len(blocks)))
    if len(index) < batch_size:
        raise ValueError(f"{len(index)} blocks cannot fill a batch of {batch_size}")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(index)
        for start in range(0, len(order) - batch_size + 1, batch_size):
            ids = blocks[order[start:start + batch_size]]
            yield {"input_ids": ids, "labels": ids}
