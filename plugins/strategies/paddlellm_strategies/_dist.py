"""Shared helpers of the multi-process strategies: launcher detection and process groups.

``paddle.distributed.launch`` starts one process per device and tells each its place
through environment variables (``PADDLE_TRAINERS_NUM``, ``PADDLE_TRAINER_ID``); a strategy
that needs several processes reads them here, before any Paddle import.
"""
from __future__ import annotations

import os

from paddlellm.errors import ConfigError

LAUNCH_HINT = ("python -m paddle.distributed.launch --nproc_per_node N $(which llm) run "
               "--strategy {name} ...  (or: llm launch --nproc_per_node N -- run --strategy {name} ...)")


def launched() -> bool:
    """Whether this process was started by ``paddle.distributed.launch`` (or an equivalent)."""
    return "PADDLE_TRAINERS_NUM" in os.environ and "PADDLE_TRAINER_ID" in os.environ


def launched_world() -> tuple[int, int]:
    """``(world_size, rank)`` the launcher assigned to this process."""
    return int(os.environ["PADDLE_TRAINERS_NUM"]), int(os.environ["PADDLE_TRAINER_ID"])


def require_launcher(name: str) -> tuple[int, int]:
    """The launcher's ``(world_size, rank)``, or a clear error naming the launch command."""
    if not launched():
        raise ConfigError(f"--strategy {name} runs one process per device and must be started "
                          f"by Paddle's launcher: {LAUNCH_HINT.format(name=name)}")
    return launched_world()


def init_process_group() -> None:
    """``paddle.distributed.init_parallel_env`` once per process (gloo on CPU, NCCL on GPU)."""
    import paddle.distributed as dist

    if not dist.is_initialized():
        dist.init_parallel_env()


def all_reduce_mean(value: float, world_size: int) -> float:
    """Average a Python scalar over every process of the default group."""
    if world_size == 1:
        return float(value)
    import paddle
    import paddle.distributed as dist

    tensor = paddle.to_tensor([float(value)], dtype="float64")
    dist.all_reduce(tensor)
    return float(tensor.numpy()[0]) / world_size


def barrier(world_size: int) -> None:
    if world_size > 1:
        import paddle.distributed as dist

        dist.barrier()


def strided(items: list, world_size: int, rank: int) -> list:
    """Rank ``rank``'s strided part, every rank the same length (the remainder is dropped)."""
    items = list(items)
    usable = len(items) - len(items) % world_size
    return items[:usable][rank::world_size]
