"""Data parallel: one model replica per process, gradients averaged after every backward.

Start it with Paddle's launcher (gloo on CPU, NCCL on GPU)::

    python -m paddle.distributed.launch --nproc_per_node 2 $(which llm) run --strategy data_parallel ...
    llm launch --nproc_per_node 2 -- run --strategy data_parallel ...

Each process reads a strided part of the training examples (:meth:`shard`), so a step of
``N`` processes × batch ``b`` computes the gradient of one process × batch ``N·b``. Without
a launcher this is an error (a run that silently trains alone is the worse surprise); under
the launcher with one process it runs like ``single``, with a warning.
"""
from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from . import _dist


class DataParallelOptions(BaseModel):
    """Options of ``--strategy data_parallel``."""

    model_config = ConfigDict(extra="forbid")

    dp_find_unused_parameters: bool = Field(
        False, description="let parameters that get no gradient in a step pass (slower; "
                           "needed by models with unused branches)")


def _wrapper_class():
    import paddle

    class DataParallelModel(paddle.DataParallel):
        """``paddle.DataParallel`` that also answers the wrapped model's own attributes
        (``save_pretrained``, ``generate``, ``config``...), so stages need not unwrap it, and
        names parameters as the model does (no ``_layers.`` prefix), so optimizer states and
        weight-decay rules keyed by name are the same as with ``single``."""

        def named_parameters(self, prefix: str = "", include_sublayers: bool = True):
            return self._layers.named_parameters(prefix=prefix, include_sublayers=include_sublayers)

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name == "_layers" or "_sub_layers" not in self.__dict__:
                    raise
                return getattr(self._sub_layers["_layers"], name)

    return DataParallelModel


class DataParallelStrategy:
    """Replicated model, strided data, averaged gradients (``paddle.DataParallel``)."""

    name = "data_parallel"
    config_class = DataParallelOptions

    def __init__(self, options: DataParallelOptions | None = None) -> None:
        self.options = options or DataParallelOptions()
        self._world_size, self._rank = 1, 0

    def setup(self, backend: Any) -> None:
        self._world_size, self._rank = _dist.require_launcher(self.name)
        if self._world_size == 1:
            warnings.warn("data_parallel with one process: this runs like --strategy single",
                          stacklevel=2)
            return
        _dist.init_process_group()

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def is_main_process(self) -> bool:
        return self._rank == 0

    def wrap_model(self, model):
        if self._world_size == 1:
            return model
        return _wrapper_class()(model, find_unused_parameters=self.options.dp_find_unused_parameters)

    def wrap_optimizer(self, optimizer):
        return optimizer

    def shard(self, items: list) -> list:
        return _dist.strided(items, self._world_size, self._rank)

    def all_reduce_mean(self, value: float) -> float:
        return _dist.all_reduce_mean(value, self._world_size)

    def barrier(self) -> None:
        _dist.barrier(self._world_size)
