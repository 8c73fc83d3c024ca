"""The gpu backend on a machine without CUDA: unavailable, with the install command."""
from __future__ import annotations

import paddle
import pytest

from paddlellm_backend_gpu.backend import GPUBackend


@pytest.mark.skipif(paddle.is_compiled_with_cuda(), reason="checks the CPU-build path")
def test_unavailable_on_cpu_build_says_how_to_install():
    backend = GPUBackend()
    assert not backend.is_available() and backend.device_count() == 0
    reason = backend.unavailable_reason()
    assert "CPU build" in reason and "paddlepaddle-gpu" in reason


@pytest.mark.skipif(not paddle.is_compiled_with_cuda() or paddle.device.cuda.device_count() == 0,
                    reason="needs a CUDA build of Paddle and a GPU")
def test_available_with_cuda():
    backend = GPUBackend()
    assert backend.is_available() and backend.setup(0) == "gpu:0"
    assert backend.supports_dtype("float16")
