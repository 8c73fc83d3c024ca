"""Batches for the ``pretrain`` stage from an indexed (``.bin``/``.idx``) dataset.

Samples are ``max_length`` tokens: Megatron's ``seq_length + 1`` with ``seq_length =
max_length - 1``. The model sees ``max_length`` tokens and the shifted loss
(:func:`paddlellm.training.loss.causal_lm_loss`) predicts tokens ``1 .. max_length - 1`` of each
sample, exactly Megatron's ``tokens = sample[:-1]``, ``labels = sample[1:]``; since samples
overlap by one token, every token of the train split is a target once per epoch.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import DataFormatError
from .indexed import (SPLIT_NAMES, MMapIndexedDataset, PretrainingDataset, resolve_prefix,
                      samples_per_epoch, split_boundaries)

#: valid-split samples evaluated: the first ones of its shuffled order
EVAL_SAMPLES = 1024


def split_samples_per_epoch(prefix: str, split: str, which: str, seq_length: int) -> int:
    """How many samples one epoch of a split yields (reads only the index)."""
    indexed = MMapIndexedDataset(prefix)
    bounds = split_boundaries(split, len(indexed))
    k = SPLIT_NAMES.index(which)
    tokens = int(indexed.sizes[bounds[k]:bounds[k + 1]].sum(dtype=np.int64))
    return samples_per_epoch(tokens, seq_length)


def sample_batches(dataset: PretrainingDataset, batch_size: int,
                   indices: Sequence[int] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Endless ``{"input_ids", "labels"}`` batches ``(B, seq_length + 1)`` in sample order.

    The samples are already shuffled (``shuffle_idx``); ``indices`` restricts to a rank's
    part. Labels equal the inputs because the loss shifts them. When the indexed samples
    run out the order starts over.
    """
    index = np.asarray(indices if indices is not None else range(len(dataset)))
    if len(index) < batch_size:
        raise DataFormatError(f"{len(index)} samples cannot fill a batch of {batch_size}")
    while True:
        for start in range(0, len(index) - batch_size + 1, batch_size):
            ids = np.stack([dataset[int(i)] for i in index[start:start + batch_size]])
            yield {"input_ids": ids, "labels": ids}  # (B, seq_length + 1)


class IndexedPretrainingData:
    """Train and eval batches of the run in ``config`` from the dataset at ``prefix``."""

    def __init__(self, prefix: str, config: Any, strategy: Any):
        self.prefix, self.config, self.strategy = prefix, config, strategy
        self.seq_length = config.max_length - 1
        self.per_step = (config.per_device_train_batch_size * config.gradient_accumulation_steps
                         * strategy.world_size)
        per_epoch = split_samples_per_epoch(prefix, config.split, "train", self.seq_length)
        self.steps_per_epoch = max(1, per_epoch // self.per_step)

    def total_steps(self) -> int:
        config = self.config
        if config.max_steps > 0:
            return config.max_steps
        return max(1, math.ceil(config.num_train_epochs * self.steps_per_epoch))

    def train_batches(self, total_steps: int) -> Iterator[dict[str, np.ndarray]]:
        config = self.config
        train_set = PretrainingDataset(self.prefix, self.seq_length, config.split, "train",
                                       seed=config.seed, num_samples=total_steps * self.per_step)
        shard = self.strategy.shard(list(range(len(train_set))))
        return sample_batches(train_set, config.per_device_train_batch_size, shard)

    def eval_batches(self) -> list[dict[str, np.ndarray]]:
        """The valid split (or all of ``--eval_data``), at most :data:`EVAL_SAMPLES`."""
        config = self.config
        if config.eval_data:
            eval_prefix = resolve_prefix(config.eval_data)
            if eval_prefix is None:
                raise DataFormatError(f"--eval_data {config.eval_data}: expected an indexed "
                                      "dataset prefix, like --data")
            eval_set = PretrainingDataset(eval_prefix, self.seq_length, "0,1,0", "valid",
                                          seed=config.seed)
        else:
            eval_set = PretrainingDataset(self.prefix, self.seq_length, config.split, "valid",
                                          seed=config.seed)
        size = config.per_device_eval_batch_size
        n_eval = min(len(eval_set), EVAL_SAMPLES)
        batches = []
        for start in range(0, n_eval, size):
            ids = np.stack([eval_set[i] for i in range(start, min(start + size, n_eval))])
            batches.append({"input_ids": ids, "labels": ids})  # (b, seq_length + 1)
        return batches


def load_tokenizer(config: Any, resume_dir: Any = None):
    """The tokenizer an indexed dataset was made with (or the resumed run's)."""
    from ..tokenizer import AutoTokenizer

    path = resume_dir or config.tokenizer_name_or_path or config.model_name_or_path
    if not path:
        raise DataFormatError(f"{config.data} is an indexed (.bin/.idx) dataset: pass the "
                              "tokenizer it was made with (--tokenizer_name_or_path DIR)")
    return AutoTokenizer.from_pretrained(path)
