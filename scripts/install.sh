#!/usr/bin/env bash
# Create .venv and install recsys-matta with a CPU (default) or CUDA TorchRec stack.
#
# Why a script and not just `pip install -e .`: every torchrec wheel declares a dependency on the
# CUDA `fbgemm-gpu` (a 493 MB wheel that fails to import with CPU torch). A requirements file
# cannot say --no-deps, so the working order is done here:
#   torch 2.13.0 -> fbgemm-gpu-cpu 1.8.0 (or fbgemm-gpu 1.8.0 on GPU) -> torchrec 1.8.0 --no-deps
#   -> the package and its other dependencies.
# Usage: scripts/install.sh [cpu|gpu]     (default: cpu)
# GPU only: TORCH_INDEX_URL picks the CUDA build of torch + fbgemm-gpu (both must come from the same
# index), e.g. TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126. Unset: PyPI's default build
# (CUDA 13.0 for torch 2.13.0, needs an R580+ driver). See docs/deployment.md.
set -euo pipefail
flavour=${1:-cpu}
venv=${VENV:-.venv}
python=${PYTHON:-python3}

if [[ ! -x $venv/bin/python ]]; then
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
cuda_index=()
if [[ $flavour == gpu && -n ${TORCH_INDEX_URL:-} ]]; then
  cuda_index=(--index-url "$TORCH_INDEX_URL")
fi

"${pip[@]}" ${cuda_index[@]+"${cuda_index[@]}"} torch==2.13.0
if [[ $flavour == gpu ]]; then
  "${pip[@]}" ${cuda_index[@]+"${cuda_index[@]}"} fbgemm-gpu==1.8.0
else
  "${pip[@]}" fbgemm-gpu-cpu==1.8.0
fi
"${pip[@]}" --no-deps torchrec==1.8.0
"${pip[@]}" -e '.[dev]'
# Fail loudly here rather than in the first test if the stack does not load.
"$venv/bin/python" -c "import torch, fbgemm_gpu, torchrec; print('torch', torch.__version__, '| torchrec', torchrec.__version__)"
