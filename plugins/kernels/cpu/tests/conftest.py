"""Fixtures: a plugin manager that has this distribution's plugin (installed or not), and a
skip with the build's own reason where the kernels cannot be compiled here."""
from __future__ import annotations

import importlib
import os

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
    """The compiled operators; the test is skipped, with the reason, where they cannot build --
    but fails where a C++ compiler is there and the build still failed (a source that no
    longer compiles must not turn these tests into skips; ``PADDLELLM_CPU_KERNELS_OPTIONAL=1``
    allows it)."""
    import shutil

    from paddlellm_kernels_cpu import build

    module = build.ops()
    if module is None:
        detail = build.info()["detail"]
        compiler = shutil.which("c++") or shutil.which("g++")
        if (compiler and not build.disabled() and "build failed" in detail
                and os.environ.get("PADDLELLM_CPU_KERNELS_OPTIONAL") != "1"):
            pytest.fail(f"the CPU kernels did not build with {compiler}: {detail}")
        pytest.skip(f"compiled CPU kernels unavailable here: {detail}")
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
