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
# The GPU backend is pure Python; its dependency paddlepaddle-gpu comes from Paddle's own
# index (see plugins/backends/gpu/README.md), so it is installed here without dependencies.
.venv/bin/python -m pip install -q -e ".[test]" \
  -e plugins/backends/cpu \
  -e plugins/kernels/reference \
  -e plugins/strategies \
  -e plugins/models \
  -e plugins/peft \
  -e plugins/align \
  -e plugins/merge \
  -e plugins/quant
.venv/bin/python -m pip install -q --no-deps -e plugins/backends/gpu
