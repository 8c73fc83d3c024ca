"""Fixtures: a plugin manager that has this distribution's plugin (installed or not), and a
skip with the build's own reason where the kernels cannot be compiled here."""
from __future__ import annotations

import importlib

import pytest


def _clear_caches() -> None:
    from paddlellm.modeling.attention import clear_kernel_cache
    from paddlellm.modeling.linear import clear_linear_kernel_cache

    clear_kernel_cache()
    clear_linear_kernel_cache()


@pytest.fixture
def manager():
    """The installed plugins plus ``cpu_kernels`` (registered in-process when this
    distribution is not installed), as the process-wide manager for the test."""
    from paddlellm.plugin.manager import PluginManager, reset_plugin_manager

    m = PluginManager()
    if not m.pm.has_plugin("cpu_kernels"):
        m.register(importlib.import_module("paddlellm_kernels_cpu.plugin"), "cpu_kernels",
                   "paddlellm-kernels-cpu", "0.1.0")
    reset_plugin_manager(m)
    _clear_caches()
    yield m
    reset_plugin_manager(None)
    _clear_caches()


@pytest.fixture
def ops():
    """The compiled operators; the test is skipped, with the reason, where they cannot build."""
    from paddlellm_kernels_cpu import build

    module = build.ops()
    if module is None:
        pytest.skip(f"compiled CPU kernels unavailable here: {build.info()['detail']}")
    return module


@pytest.fixture(params=["avx512vnni", "avx512", "avx2", "scalar"])
def isa(request, ops, monkeypatch):
    """Run the test once per instruction set this CPU has (the library never runs one it
    lacks, so the others are skipped)."""
    from paddlellm_kernels_cpu import build

    if build.ISA_NAMES.index(request.param) > build.ISA_NAMES.index(build.isa()):
        pytest.skip(f"this CPU has no {request.param}")
    code = build.ISA_NAMES.index(request.param)
    monkeypatch.setattr(build, "isa_code", lambda name=None: code)
    return request.param
