#!/usr/bin/env bash
# Fetch, on a machine with PyPI access, the pure-Python wheels that scripts/gpu-check.sh needs
# on a GPU machine without registry access (its image has torch, numpy, einops, safetensors,
# PyYAML, OpenCV, SciPy, tqdm and pytest, not vector-quantize-pytorch and its own needs).
# The versions are constraints.txt's; the wheels land in .whl/ (git-ignored), which the
# device tool carries (`carry: [".whl"]`) and gpu-check.sh installs with --no-index.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=${PYTHON:-.venv/bin/python}
pins=()
for name in vector-quantize-pytorch einx loguru torch-einops-utils frozendict; do
  pin=$(grep -i "^${name}==" constraints.txt) || { echo "no pin of $name in constraints.txt" >&2; exit 1; }
  pins+=("$pin")
done
mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 -d .whl "${pins[@]}"
ls -1 .whl
