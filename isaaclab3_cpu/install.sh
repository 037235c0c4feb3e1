#!/usr/bin/env bash
# Isaac Lab 3 without Isaac Sim ("kit-less": Newton / MuJoCo-Warp physics), on the CPU, offline at run time.
#
#   isaaclab3_cpu/install.sh [VENV]        (default .venv-isaaclab; `make isaaclab` runs it)
#
# The isaaclab 3.0.0 wheel asks for Python >= 3.12 and torch 2.11 (a multi-GB CUDA build); it
# runs on Python 3.11 with the CPU torch 2.13.0, so it is installed without its declared
# dependencies, next to the pinned set a training run imports (requirements.txt). Its scene
# assets, which Isaac Lab downloads at run time, are made from files the packages ship
# (prepare_assets.py); sweeps point ISAACSIM_ASSET_ROOT at them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-isaaclab}
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
started=$(date +%s)
test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet torch==2.13.0
"$VENV/bin/python" -m pip install --quiet --no-deps -r isaaclab3_cpu/requirements.txt
"$VENV/bin/python" -m pip install --quiet --no-deps --ignore-requires-python isaaclab==3.0.0
"$VENV/bin/python" isaaclab3_cpu/prepare_assets.py "$VENV/assets"
touch "$VENV/.installed"
echo "Isaac Lab 3 (CPU, kit-less) in $VENV: $(du -sh "$VENV" | cut -f1), $(( $(date +%s) - started )) s;" \
     "run it as $VENV/bin/isaaclab with ISAACSIM_ASSET_ROOT=$(cd "$VENV/assets" && pwd)"
