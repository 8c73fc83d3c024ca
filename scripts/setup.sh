#!/usr/bin/env bash
# Create .venv (if missing) and install the core, every plugin distribution and the test
# tools into it, in editable mode. Safe to run again; it only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
# ".[test]" also brings the optional extras the tests exercise: the training loggers'
# libraries (tensorboard, visualdl, matplotlib) and Hugging Face datasets (pyproject.toml).
# The GPU backend is pure Python; its dependency paddlepaddle-gpu comes from Paddle's own
# index (see plugins/backends/gpu/README.md), so it is installed here without dependencies.
.venv/bin/python -m pip install -q -e ".[test]" \
  -e plugins/backends/cpu \
  -e plugins/kernels/reference \
  -e plugins/kernels/cpu \
  -e plugins/strategies \
  -e plugins/models \
  -e plugins/peft \
  -e plugins/align \
  -e plugins/merge \
  -e plugins/quant
.venv/bin/python -m pip install -q --no-deps -e plugins/backends/gpu
# Compile the CPU kernels now (cached under ~/.cache/paddlellm/kernels; otherwise the first
# run that needs them builds them). A failed build only prints why: the reference paths run.
.venv/bin/python -c "from paddlellm_kernels_cpu import build; print('cpu kernels:', build.info()['detail'])" \
  2>/dev/null || echo "note: the compiled CPU kernels did not build; the reference paths run (see llm doctor)" >&2
# Headless Chromium + chromedriver from Debian's packages for tests/test_chat_page.py (it skips
# with a reason when they are missing): installed only when missing and when running as root.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "note: chromium/chromedriver missing and not root: the chat-page test will skip" >&2
  fi
fi
