#!/usr/bin/env bash
# Create .venv and install compresskit with every extra (compresskit[all]) and the test tools.
# Torch: a CPU build where no NVIDIA GPU is present (a local wheel when the machine ships one),
# the default (CUDA) build otherwise. An already-installed torch is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    pip install torch
  elif pip install "torch==2.13.0+cpu"; then
    :  # this workplace ships a local CPU wheel (pip find-links)
  else
    pip install torch --index-url https://download.pytorch.org/whl/cpu
  fi
fi
pip install -e ".[all,test]"  # every extra: search, onnx, report, vision, detection
