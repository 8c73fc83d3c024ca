"""The CPU backend: Paddle's CPU build, with the thread and allocator settings it needs.

Measured traps this backend takes care of (see shared notes on Paddle on CPU):
``import paddle`` sets ``OMP_NUM_THREADS=1`` when unset, halving matmul speed, so the thread
count is set before and after the import; glibc's default trim/mmap thresholds make fresh
large allocations slow, so they are raised with ``mallopt``; on AMD CPUs MKL takes its slow
generic code paths unless told the CPU type (float32 matmul 2.5-3x slower), so
``MKL_DEBUG_CPU_TYPE=5`` is set before the first MKL call.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tune_allocator() -> bool:
    """Keep freed memory in the heap (glibc only); True when the settings took."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        ok_trim = libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
        ok_mmap = libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum
        return bool(ok_trim and ok_mmap)
    except (OSError, AttributeError):
        return False


def mkl_cpu_type_for_amd() -> bool:
    """On AMD CPUs set ``MKL_DEBUG_CPU_TYPE=5`` (unless set): Paddle's MKL otherwise runs its
    generic kernels (1024x512 @ 512x1408 on 2 threads: 54 -> 20 ms). MKL reads it at its
    first call, so this runs at import of this module and again in ``setup``. True when it
    set the variable."""
    if "MKL_DEBUG_CPU_TYPE" in os.environ:
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            amd = "AuthenticAMD" in fh.read(4096)
    except OSError:
        return False
    if amd:
        os.environ["MKL_DEBUG_CPU_TYPE"] = "5"
    return amd


mkl_cpu_type_for_amd()


class CPUBackend:
    name = "cpu"
    priority = 0
    device_type = "cpu"

    def __init__(self) -> None:
        self.num_threads: int | None = None
        self.allocator_tuned = False

    def is_available(self) -> bool:
        try:
            import paddle  # noqa: F401
        except ImportError:
            return False
        return True

    def unavailable_reason(self) -> str:
        if self.is_available():
            return ""
        return "Paddle is not installed: pip install 'paddlepaddle>=3.2'"

    def device_count(self) -> int:
        return 1

    def setup(self, device_index: int = 0, num_threads: int | None = None) -> str:
        threads = num_threads or int(os.environ.get("PADDLELLM_NUM_THREADS", 0)) or usable_cpus()
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        mkl_cpu_type_for_amd()
        import paddle

        paddle.set_device("cpu")
        paddle.base.core.set_num_threads(threads)
        self.num_threads = threads
        self.allocator_tuned = tune_allocator()
        return "cpu"

    def supports_dtype(self, dtype: str, training: bool = False) -> bool:
        # Paddle 3.x has no bf16/fp16 matmul kernels on CPU in eager mode.
        return dtype == "float32"

    def info(self) -> dict[str, Any]:
        import paddle

        return {
            "paddle": paddle.__version__,
            "cuda_build": bool(paddle.is_compiled_with_cuda()),
            "cpus": usable_cpus(),
            "threads": self.num_threads or usable_cpus(),
            "onednn": bool(paddle.base.core.is_compiled_with_mkldnn()),
            "dtypes": ["float32"],
        }


backend = CPUBackend()
