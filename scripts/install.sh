#!/usr/bin/env bash
# Creates .venv and installs FaceClean into it. torch comes in as the CPU build unless an
# NVIDIA GPU is present: a plain `pip install torch` would pull several GB of CUDA build.
# Usage: scripts/install.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "install: NVIDIA GPU found, installing the CUDA build of torch $TORCH_VERSION"
    "${PIP[@]}" "torch==$TORCH_VERSION"
  else
    echo "install: no GPU, installing the CPU build of torch $TORCH_VERSION"
    # The +cpu build: from a wheel already on this machine (pip's find-links) when there is
    # one, else from PyTorch's CPU index; its dependencies come from PyPI either way.
    "${PIP[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
      || "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu \
           --extra-index-url https://pypi.org/simple "torch==$TORCH_VERSION+cpu"
  fi
fi

if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -r requirements-dev.txt
else
  "${PIP[@]}" -r requirements.txt
fi
