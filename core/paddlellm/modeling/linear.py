"""The front door to quantized linear kernels: quantized layers ask here, plugins answer.

``get_linear_kernel(spec)`` returns the kernel chosen by the ``select_linear_kernel`` hook
for the active backend, or ``None`` when no installed kernel serves ``spec`` (the layer then
computes the product with its own Paddle math). A kernel plugin that fails to load or build
is never an error here: it simply serves nothing.
"""
from __future__ import annotations

from functools import lru_cache

from ..interfaces import LinearSpec, WeightOnlyLinearKernel
from ..plugin.manager import get_plugin_manager


def get_linear_kernel(spec: LinearSpec, backend: str | None = None) -> WeightOnlyLinearKernel | None:
    """The kernel for layers like ``spec`` on ``backend`` (default: Paddle's current device)."""
    if backend is None:
        from .attention import current_backend

        backend = current_backend()
    return _kernel(spec, backend)


@lru_cache(maxsize=256)
def _kernel(spec: LinearSpec, backend: str) -> WeightOnlyLinearKernel | None:
    manager = get_plugin_manager()
    name = manager.hook.select_linear_kernel(spec=spec, backend=backend, registry=manager.registry)
    return None if name is None else manager.registry.load("linear_kernel", name)


def clear_linear_kernel_cache() -> None:
    _kernel.cache_clear()
