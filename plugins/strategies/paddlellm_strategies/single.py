"""The single-device strategy: one process, no communication."""
from __future__ import annotations

from typing import Any


class SingleDeviceStrategy:
    """Runs everything in this process on the backend's current device."""

    name = "single"

    def __init__(self, options: Any = None) -> None:
        self.options = options
        self.device: str | None = None

    def setup(self, backend: Any) -> None:
        import paddle

        self.device = paddle.get_device()

    @property
    def world_size(self) -> int:
        return 1

    @property
    def rank(self) -> int:
        return 0

    @property
    def is_main_process(self) -> bool:
        return True

    def wrap_model(self, model):
        return model

    def wrap_optimizer(self, optimizer):
        return optimizer

    def shard(self, items: list) -> list:
        return list(items)

    def all_reduce_mean(self, value: float) -> float:
        return float(value)

    def barrier(self) -> None:
        return None
