"""Shared test setup: thread count before Paddle is imported, a fresh plugin manager."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
# tests never reach the network: a model name that is no folder is not looked up on the Hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # sets MKL_DEBUG_CPU_TYPE on AMD CPUs before any test's first matmul (2.5x faster)
    import paddlellm_backend_cpu.backend  # noqa: F401,E402
except ImportError:  # the cpu backend is not installed
    pass

import pytest  # noqa: E402


@pytest.fixture
def fresh_manager(monkeypatch):
    """Reset the process-wide plugin manager around a test."""
    from paddlellm.plugin import manager as plugins

    monkeypatch.setattr(plugins, "_default", None)
    yield
    plugins._default = None
