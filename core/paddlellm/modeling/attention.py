"""The front door to attention kernels: models ask here, plugins answer.

``get_attention_kernel(spec)`` returns the kernel chosen by the ``select_attention_kernel``
hook for the active backend (or the one named, or the run's ``--attention_kernel``), checked
against ``spec``.
"""
from __future__ import annotations

from functools import lru_cache

from ..errors import UnknownPluginError
from ..interfaces import AttentionKernel, AttentionSpec, kernel_runs_on
from ..plugin.manager import get_plugin_manager

AUTO = "auto"
_default_name = AUTO  # set by ``llm run --attention_kernel NAME``


def set_default_kernel(name: str) -> None:
    """Make ``name`` the kernel of every later ``get_attention_kernel`` call without a name."""
    global _default_name
    _default_name = name or AUTO


def current_backend() -> str:
    """The backend name of Paddle's current device (``gpu:0`` -> ``gpu``)."""
    import paddle

    return paddle.get_device().split(":")[0]


def get_attention_kernel(spec: AttentionSpec, name: str | None = None,
                         backend: str | None = None) -> AttentionKernel:
    """The kernel for calls like ``spec``.

    ``name`` must serve ``spec`` (else an error); without it the run's ``--attention_kernel``
    serves the calls it supports and the ``select_attention_kernel`` hook picks for the rest.
    """
    backend = backend or current_backend()
    if name is None and _default_name != AUTO:
        try:
            return _kernel(spec, _default_name, backend)
        except UnknownPluginError:
            return _kernel(spec, AUTO, backend)
    return _kernel(spec, name or AUTO, backend)


@lru_cache(maxsize=256)
def _kernel(spec: AttentionSpec, name: str, backend: str) -> AttentionKernel:
    manager = get_plugin_manager()
    if name != AUTO:
        kernel = manager.registry.load("attention_kernel", name)
        if not kernel.supports(spec) or not kernel_runs_on(kernel, backend):
            raise UnknownPluginError(
                f"attention kernel '{name}' does not support {spec} on backend '{backend}'")
        return kernel
    return manager.select_attention_kernel(spec, backend).load()


def clear_kernel_cache() -> None:
    _kernel.cache_clear()
