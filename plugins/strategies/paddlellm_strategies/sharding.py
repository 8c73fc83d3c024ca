"""Sharded data parallel (ZeRO stage 1/2/3) through ``paddle.distributed.sharding``.

Stage 1 shards optimizer states, stage 2 also gradients, stage 3 also parameters
(``group_sharded_parallel`` levels ``os``, ``os_g``, ``p_g_os``). Paddle implements these for
GPU and XPU only: measured with Paddle 3.3.1 on CPU, ``group_sharded_parallel`` asserts the
device, ``ShardingStage3`` and auto-parallel's ``ShardingStage1/2`` (``shard_optimizer``)
stop at "Unimplemented cpu kernel for CReduceScatterOp". So on CPU :meth:`setup` raises
:class:`~paddlellm.errors.BackendUnavailableError`; use ``data_parallel`` there. Launch::

    python -m paddle.distributed.launch --nproc_per_node 8 $(which llm) run --strategy sharding --sharding_stage 2 ...

The GPU path could not be exercised on the CPU-only machine this was written on.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from paddlellm.errors import BackendUnavailableError

from . import _dist

LEVELS = {1: "os", 2: "os_g", 3: "p_g_os"}
SUPPORTED_DEVICES = ("gpu", "xpu")


class ShardingOptions(BaseModel):
    """Options of ``--strategy sharding``."""

    model_config = ConfigDict(extra="forbid")

    sharding_stage: int = Field(
        2, ge=1, le=3, description="1: optimizer states, 2: + gradients, 3: + parameters")
    sharding_offload: bool = Field(False, description="keep optimizer states in host memory")


def check_device(device: str) -> None:
    """The clear error for devices Paddle's group-sharded API does not run on."""
    kind = device.partition(":")[0]
    if kind not in SUPPORTED_DEVICES:
        raise BackendUnavailableError(
            f"--strategy sharding needs a GPU or XPU: Paddle implements group-sharded "
            f"(ZeRO stage 1/2/3) training for GPU/XPU only (no reduce_scatter kernel on CPU), "
            f"and this run is on '{device}'. "
            "On CPU use --strategy data_parallel (same result, replicated optimizer states).")


def _proxy_class():
    import paddle

    class ShardedModel(paddle.nn.Layer):
        """Holds the model until the optimizer exists, then the group-sharded wrapper
        (``group_sharded_parallel`` needs both at once); forwards everything else."""

        def __init__(self, model) -> None:
            super().__init__()
            self.inner = model
            # the plain model (save_pretrained, generate, config); not a registered sublayer
            object.__setattr__(self, "unwrapped", model)

        def forward(self, *args, **kwargs):
            return self.inner(*args, **kwargs)

        def named_parameters(self, prefix: str = "", include_sublayers: bool = True):
            # the model's own names (no "inner." prefix): optimizer states keyed as in single
            return self.unwrapped.named_parameters(prefix=prefix, include_sublayers=include_sublayers)

        def __getattr__(self, name: str) -> Any:
            try:
                return super().__getattr__(name)
            except AttributeError:
                if name in ("inner", "unwrapped") or "unwrapped" not in self.__dict__:
                    raise
                return getattr(self.__dict__["unwrapped"], name)

    return ShardedModel


class ShardingStrategy:
    """ZeRO-style sharded data parallel (``group_sharded_parallel``); GPU/XPU only."""

    name = "sharding"
    config_class = ShardingOptions

    def __init__(self, options: ShardingOptions | None = None) -> None:
        self.options = options or ShardingOptions()
        self._world_size, self._rank = 1, 0
        self._proxy = None

    def setup(self, backend: Any) -> None:
        import paddle

        check_device(paddle.get_device())
        self._world_size, self._rank = _dist.require_launcher(self.name)
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
        self._proxy = _proxy_class()(model)
        return self._proxy

    def wrap_optimizer(self, optimizer):
        from paddle.distributed.sharding import group_sharded_parallel

        if self._proxy is None:
            raise RuntimeError("sharding: wrap_model must be called before wrap_optimizer")
        level = LEVELS[self.options.sharding_stage]
        wrapped, optimizer, _ = group_sharded_parallel(
            self._proxy.unwrapped, optimizer, level, offload=self.options.sharding_offload)
        self._proxy.inner = wrapped
        return optimizer

    def shard(self, items: list) -> list:
        return _dist.strided(items, self._world_size, self._rank)

    def all_reduce_mean(self, value: float) -> float:
        return _dist.all_reduce_mean(value, self._world_size)

    def barrier(self) -> None:
        _dist.barrier(self._world_size)
