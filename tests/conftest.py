"""Shared test setup: thread count before Paddle is imported, a fresh plugin manager."""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))

import pytest  # noqa: E402


@pytest.fixture
def fresh_manager(monkeypatch):
    """Reset the process-wide plugin manager around a test."""
    from paddlellm import plugins

    monkeypatch.setattr(plugins, "_default", None)
    yield
    plugins._default = None
