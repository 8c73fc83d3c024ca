#!/usr/bin/env bash
# Create .venv-oracle: the dev-only reference environment (torch CPU, transformers, peft, trl,
# sentencepiece, lm-eval) that the interop tests compare against. It is never a runtime dependency of
# paddlellm; `make test` builds it once and points $PADDLELLM_DEV_PYTHON at it.
# Skip it with PADDLELLM_NO_ORACLE=1 (the interop tests then skip, naming this script).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${PADDLELLM_NO_ORACLE:-0}" = 1 ]; then exit 0; fi
PY=${PYTHON:-python3}
if [ ! -x .venv-oracle/bin/python ]; then
  "$PY" -m venv .venv-oracle
fi
if .venv-oracle/bin/python -c "import torch, transformers, peft, trl, sentencepiece, lm_eval" 2>/dev/null; then
  exit 0
fi
.venv-oracle/bin/python -m pip install -q --upgrade pip
# torch 2.13.0 first and pinned, so that nothing later pulls a CUDA build of several GB.
.venv-oracle/bin/python -m pip install -q "torch==2.13.0"
.venv-oracle/bin/python -m pip install -q "torch==2.13.0" -r scripts/oracle-requirements.txt
