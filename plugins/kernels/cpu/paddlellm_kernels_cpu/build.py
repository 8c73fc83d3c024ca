"""Builds the compiled kernels on first use and caches them; a failed build never blocks a run.

The C++ sources in ``csrc/`` ship with the package. On first use (the first time a kernel of
this plugin is asked whether it supports a call, or ``llm doctor``) they are compiled with
Paddle's C++ extension API (``paddle.utils.cpp_extension.load``) in a child process, so that
a crashing or noisy compiler cannot disturb the caller, and the shared library is cached in

    $PADDLELLM_KERNEL_CACHE  or  $XDG_CACHE_HOME/paddlellm/kernels  or  ~/.cache/paddlellm/kernels

under ``cpu-<key>``, where ``key`` hashes the sources, the compiler flags, the Paddle and
Python versions and the CPU's instruction-set flags: a new source or another machine builds
again, everything else loads the cached library in milliseconds. The library carries
AVX-512, AVX2 and portable versions of every kernel and picks one from the CPU's features at
run time (``isa()``).

A failure (no compiler, a compile error) is recorded next to where the library would be
(``failed.txt``), reported by ``info()`` and ``llm doctor``, and every call then runs on the
reference path; delete that file (or set ``PADDLELLM_CPU_KERNELS_REBUILD=1``) to try again.
``PADDLELLM_CPU_KERNELS=0`` turns the plugin off without uninstalling it.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CSRC = Path(__file__).with_name("csrc")
SOURCES = ("ops.cc", "impl_avx512vnni.cc", "impl_avx512.cc", "impl_avx2.cc", "impl_scalar.cc")
HEADERS = ("kernels.h", "kernels_impl.inc")
#: no -march=native: the library must run on any x86-64 (and build elsewhere); the fast paths
#: are compiled per instruction set (``#pragma GCC target``) and chosen at run time
CXX_FLAGS = ["-O3", "-std=c++17", "-fopenmp", "-fno-math-errno", "-w"]
BUILD_TIMEOUT_S = 600
DISABLE_ENV = "PADDLELLM_CPU_KERNELS"
REBUILD_ENV = "PADDLELLM_CPU_KERNELS_REBUILD"
ISA_ENV = "PADDLELLM_CPU_KERNELS_ISA"
ISA_NAMES = ("scalar", "avx2", "avx512", "avx512vnni")
#: CPU flags that decide which kernels can run (part of the cache key)
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "avx_vnni")

_lock = threading.Lock()
_state: dict[str, Any] = {}


def disabled() -> bool:
    """Whether ``PADDLELLM_CPU_KERNELS=0`` (or ``off``/``false``) turned the plugin off."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in ("0", "off", "false", "no")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    """The instruction-set flags of this CPU that the kernels care about (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return tuple(f for f in _CPU_FLAGS if f in have)
    return ()


@functools.lru_cache(maxsize=1)
def isa() -> str:
    """The instruction set the kernels run with: the best this CPU has, or a lower one asked
    for with ``PADDLELLM_CPU_KERNELS_ISA=avx512|avx2|scalar`` (the library never runs one the CPU
    lacks). Read once per process."""
    flags = set(cpu_flags())
    best = ("avx512vnni" if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni"} <= flags
            else "avx512" if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
            else "avx2" if {"avx2", "fma"} <= flags else "scalar")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        best = "scalar"
    asked = os.environ.get(ISA_ENV, "").strip().lower()
    if asked in ISA_NAMES and ISA_NAMES.index(asked) < ISA_NAMES.index(best):
        return asked
    return best


@functools.lru_cache(maxsize=4)
def isa_code(name: str | None = None) -> int:
    """The ``isa`` attribute of the operators (0 scalar, 1 avx2, 2 avx512, 3 avx512vnni)."""
    return ISA_NAMES.index(name or isa())


def num_threads() -> int:
    """Threads of the kernels, as many as Paddle's: ``PADDLELLM_NUM_THREADS``, else what the
    ``cpu`` backend set up (looked up by registered name), else ``OMP_NUM_THREADS`` (which
    ``import paddle`` pins to 1 when unset, hence after the backend), else the usable CPUs."""
    raw = os.environ.get("PADDLELLM_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    threads = _backend_threads()
    if threads:
        return threads
    raw = os.environ.get("OMP_NUM_THREADS", "").strip()
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def ld_flags() -> list[str]:
    """Link the OpenMP runtime Paddle's MKL already runs (Intel's ``libiomp5``, which serves
    GCC's OpenMP calls too) so the kernels share its thread pool instead of starting a second
    pool that competes with MKL's spinning threads; GCC's ``libgomp`` where Paddle has none.
    The run path also lets the operators find Paddle's ``libmklml_intel`` (its ``cblas_sgemm``
    serves float32 products of several rows; looked up at run time, optional)."""
    import paddle

    libs = Path(paddle.__file__).parent / "libs"
    if (libs / "libiomp5.so").exists():
        return [f"-L{libs}", "-liomp5", f"-Wl,-rpath,{libs}", "-ldl"]
    return ["-fopenmp", "-ldl"]


_backend_threads_seen: list[int] = []  # the backend's count, once it has set one up


def _backend_threads() -> int | None:
    if _backend_threads_seen:
        return _backend_threads_seen[0]
    try:
        from paddlellm.api import get_registry

        registry = get_registry()
        if registry.has("backend", "cpu"):
            threads = getattr(registry.load("backend", "cpu"), "num_threads", None)
            if threads:
                _backend_threads_seen.append(int(threads))
            return threads
    except Exception:  # no backend plugin, or it cannot load: fall through to the environment
        return None
    return None


def cache_root() -> Path:
    if os.environ.get("PADDLELLM_KERNEL_CACHE"):
        return Path(os.environ["PADDLELLM_KERNEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "paddlellm" / "kernels"


def build_key() -> str:
    """Hash of everything the built library depends on."""
    import paddle

    h = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(json.dumps([CXX_FLAGS, ld_flags(), paddle.__version__, sys.version_info[:2],
                         platform.machine(), cpu_flags(), os.environ.get("CXX", "")]).encode())
    return h.hexdigest()[:16]


def module_name(key: str) -> str:
    return f"paddlellm_cpu_kernels_{key}"


def compiler() -> str | None:
    """The C++ compiler Paddle's extension build will call (``$CXX`` or ``c++``), if on PATH."""
    return shutil.which(os.environ.get("CXX", "c++")) or None


_CHILD = """
import sys
from paddle.utils.cpp_extension import load
name, build_dir, sources, cflags, ldflags = sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4].split(), sys.argv[5].split()
load(name=name, sources=sources, extra_cxx_cflags=cflags, extra_ldflags=ldflags,
     build_directory=build_dir, verbose=False)
"""


def _compile(name: str, build_dir: Path) -> None:
    """Compile in a child interpreter (nice'd, output captured); raise with its log on failure."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError(f"no C++ compiler: '{os.environ.get('CXX', 'c++')}' is not on PATH "
                           "(install g++, e.g. `apt-get install g++`, or set CXX)")
    sources = ",".join(str(CSRC / s) for s in SOURCES)
    cmd = [sys.executable, "-c", _CHILD, name, str(build_dir), sources, " ".join(CXX_FLAGS),
           " ".join(ld_flags())]
    if shutil.which("nice"):
        cmd = ["nice", "-n", "10", *cmd]
    env = {**os.environ, "MAX_JOBS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, env=env,
                          cwd=str(build_dir))
    if proc.returncode != 0:
        log = (proc.stdout + proc.stderr).strip().splitlines()
        errors = [l for l in log if "error" in l.lower()] or log
        raise RuntimeError(f"compiling {CSRC} with {cxx} failed (exit {proc.returncode}): "
                           + " | ".join(errors[-6:]))


def _load(name: str, build_dir: Path):
    """Register the built library's operators in this process; the module of their Python API."""
    import logging
    import warnings

    previous = logging.root.manager.disable
    logging.disable(logging.INFO)  # Paddle logs "using custom operator only" at INFO
    try:
        with warnings.catch_warnings():  # and warns at import that ccache is missing
            warnings.simplefilter("ignore")
            from paddle.utils.cpp_extension import extension_utils

            return extension_utils._import_module_from_library(name, str(build_dir / name), False)
    finally:
        logging.disable(previous)


def _build_and_load() -> dict[str, Any]:
    import fcntl

    key = build_key()
    name = module_name(key)
    build_dir = cache_root() / f"cpu-{key}"
    so_path = build_dir / name / f"{name}.so"
    failed = build_dir / "failed.txt"
    state: dict[str, Any] = {"key": key, "library": str(so_path), "isa": isa(),
                             "threads": num_threads()}
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:  # one build at a time, across processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        if os.environ.get(REBUILD_ENV, "").strip() in ("1", "true", "yes"):
            failed.unlink(missing_ok=True)
            if so_path.exists():
                so_path.unlink()
        if failed.exists():
            raise RuntimeError(f"{failed.read_text().strip()} (recorded in {failed}; delete it "
                               f"or set {REBUILD_ENV}=1 to try again)")
        if not so_path.exists():
            start = time.perf_counter()
            try:
                _compile(name, build_dir)
                if not so_path.exists():
                    raise RuntimeError(f"the build finished but {so_path} is missing")
            except Exception as exc:
                failed.write_text(str(exc) if isinstance(exc, RuntimeError) else repr(exc))
                raise
            state["built_in_s"] = round(time.perf_counter() - start, 1)
    state["module"] = _load(name, build_dir)
    return state


def ops():
    """The module of compiled operators, building it on first use; ``None`` when unavailable
    (turned off, or the build failed: see :func:`info`)."""
    if disabled():
        return None
    with _lock:
        if "module" in _state:
            return _state["module"]
        if "error" in _state:
            return None
        try:
            _state.update(_build_and_load())
        except Exception as exc:  # never block a run: the reference path takes over
            _state["error"] = str(exc) if isinstance(exc, RuntimeError) else repr(exc)
            return None
        return _state["module"]


def info() -> dict[str, Any]:
    """What ``llm doctor`` shows: whether the kernels are built and which instruction set runs."""
    if disabled():
        return {"available": False, "detail": f"turned off by {DISABLE_ENV}=0; the reference "
                                               "path runs"}
    ops()
    if "error" in _state:
        return {"available": False, "detail": f"build failed, the reference path runs: "
                                              f"{_state['error']}"}
    detail = (f"compiled, {_state['isa']}, {_state['threads']} thread(s), float32 products of "
              f"several rows: {'MKL cblas_sgemm' if blas() else 'compiled'}, {_state['library']}")
    if "built_in_s" in _state:
        detail += f" (built now in {_state['built_in_s']} s)"
    return {"available": True, "detail": detail, "isa": _state["isa"],
            "library": _state["library"]}


def blas() -> bool:
    """Whether float32 products of several rows use the process's MKL ``cblas_sgemm`` (Paddle's
    ``libmklml_intel``; ``PADDLELLM_CPU_KERNELS_BLAS=0`` turns that off). Asked once."""
    if "blas" not in _state:
        module = ops()
        if module is None:
            return False
        import paddle

        _state["blas"] = bool(module.plk_runtime_info(paddle.zeros([1]))[0].item())
    return _state["blas"]


def reset() -> None:
    """Forget this process's build result (tests); a loaded library stays registered."""
    with _lock:
        _state.pop("error", None)
