#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in $VENV (default .venv) and install
# medllm into it, editable, with its dev extra.
#
# torch: an installed torch >= 2.5 (for example the CUDA build of a GPU node's system Python) is
# kept: the venv then sees the system site-packages. Otherwise torch==2.13.0 is installed first,
# pinned, so that pip never pulls a multi-GB CUDA build for the `torch>=2.5` requirement.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_PIN=${TORCH_PIN:-torch==2.13.0}

has_torch() { "$1" - <<'PY' 2>/dev/null
import sys, torch
v = tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2])
sys.exit(0 if v >= (2, 5) else 1)
PY
}

if [ ! -x "$VENV/bin/python" ]; then
  if has_torch "$PY"; then
    echo "setup: $PY already has torch >= 2.5; the venv will use it (--system-site-packages)"
    "$PY" -m venv --system-site-packages "$VENV"
  else
    "$PY" -m venv "$VENV"
  fi
fi
if ! has_torch "$VENV/bin/python"; then
  echo "setup: installing $TORCH_PIN"
  "$VENV/bin/python" -m pip install -q "$TORCH_PIN"
fi
# Reinstall only when pyproject.toml changed since the last install.
stamp="$VENV/.medllm-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
"$VENV/bin/python" -c "import torch, medllm; print(f'setup: medllm {medllm.__version__}, torch {torch.__version__}, python ' + __import__('sys').version.split()[0])"
