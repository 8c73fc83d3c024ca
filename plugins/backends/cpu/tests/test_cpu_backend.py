"""The cpu backend: selection, thread setup (Paddle's OMP_NUM_THREADS=1 trap), dtypes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from paddlellm.errors import BackendUnavailableError, UnknownPluginError
from paddlellm.plugin.manager import PluginManager
from paddlellm_backend_cpu.backend import CPUBackend, usable_cpus


def test_auto_selection_picks_cpu_when_no_gpu():
    manager = PluginManager()
    assert manager.select_backend(None).name == "cpu"
    assert manager.select_backend("auto").name == "cpu"
    assert manager.select_backend("cpu:0").name == "cpu"


def test_requesting_an_unavailable_or_unknown_backend_is_explained():
    manager = PluginManager()
    with pytest.raises(BackendUnavailableError, match="'gpu' is installed but not available.*paddlepaddle-gpu"):
        manager.select_backend("gpu")
    with pytest.raises(UnknownPluginError, match="unknown backend 'npu'.*valid: cpu, gpu"):
        manager.select_backend("npu")
    with pytest.raises(BackendUnavailableError, match="NAME:INDEX"):
        manager.select_backend("cpu:x")


def test_setup_uses_every_core_despite_paddles_import_default():
    # In a fresh process without OMP_NUM_THREADS, `import paddle` would pin 1 thread.
    code = ("import os; os.environ.pop('OMP_NUM_THREADS', None)\n"
            "from paddlellm_backend_cpu.backend import backend\n"
            "print(backend.setup(), backend.num_threads, os.environ['OMP_NUM_THREADS'])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True).stdout.split()
    assert out == ["cpu", str(usable_cpus()), str(usable_cpus())]


def test_dtypes_and_info():
    backend = CPUBackend()
    assert backend.supports_dtype("float32")
    assert not backend.supports_dtype("bfloat16", training=True)
    assert backend.is_available() and backend.unavailable_reason() == ""
    info = backend.info()
    assert info["cuda_build"] is False and info["paddle"].startswith("3.")
