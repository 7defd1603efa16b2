#!/usr/bin/env bash
# Set up rlnorm on a fresh machine: a virtual environment in .venv with the package, its dev
# tools, the pygame renderer, MuJoCo and Ray (`rlnorm sweep --backend ray`, so CI tests it).
# torch's CPU build is installed first where the
# environment has no torch, so the `torch>=2.3` requirement does not pull a multi-GB CUDA build. Idempotent: re-running it
# only installs what changed. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet "torch==2.13.0"
fi
# setuptools ends every editable install of a package-dir layout with an information-only
# notice ("Editable installation. Please be careful with folders ..."), which is no warning
# about this project; the filter silences that one message and nothing else. The packaging
# cannot avoid it: both editable modes that can map agents/, envs/ and configs/ into rlnorm
# (lenient, the default, and strict) emit it, and compat emits a deprecation warning
# instead and cannot map them (setuptools 84).
PYTHONWARNINGS="ignore:Editable installation" \
    .venv/bin/python -m pip install --quiet -e ".[dev,render,mujoco,ray]"
