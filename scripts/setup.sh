#!/usr/bin/env bash
# Set up charnn in ./.venv: a CPU build of torch (unless torch is already there), then charnn itself.
#   CHARNN_TORCH        the torch requirement to install (default: torch==2.13.0)
#   CHARNN_TORCH_INDEX  a package index for torch, e.g. https://download.pytorch.org/whl/cpu for a CPU-only
#                       build where PyPI's default is a CUDA build, or .../whl/cu126 for a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "installing ${CHARNN_TORCH:-torch==2.13.0} ..."
  "${pip[@]}" "${CHARNN_TORCH:-torch==2.13.0}" ${CHARNN_TORCH_INDEX:+--index-url "$CHARNN_TORCH_INDEX"}
fi
echo "installing charnn ..."
"${pip[@]}" -e ".[dev]"
if command -v nvidia-smi >/dev/null 2>&1 && ! .venv/bin/python -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  echo "note: this machine has an NVIDIA GPU but torch here is a CPU build; for the GPU, reinstall torch with"
  echo "      CHARNN_TORCH_INDEX=https://download.pytorch.org/whl/cu126 after removing .venv"
fi
