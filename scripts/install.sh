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
    # A CPU wheel already on this machine (pip's find-links) first, then PyTorch's CPU index.
    "${PIP[@]}" --no-index "torch==$TORCH_VERSION" 2>/dev/null \
      || "${PIP[@]}" --index-url https://download.pytorch.org/whl/cpu "torch==$TORCH_VERSION"
  fi
fi

if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -r requirements-dev.txt
else
  "${PIP[@]}" -r requirements.txt
fi
