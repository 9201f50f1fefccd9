#!/usr/bin/env bash
# A second virtual environment with Ultralytics, for the Ultralytics-checkpoint tests and benchmarks.
#
# Why a second one: ultralytics needs torchvision, and no torchvision wheel imports beside the main
# .venv's pinned CPU torch 2.13.0. This environment takes torch 2.14.1 + torchvision 0.29.1 instead (the
# torch wheel is a ~5.5 GB CUDA build; it runs on CPU too), then ultralytics (AGPL-3.0: installed here
# only to unpickle and run Ultralytics checkpoints, never vendored) and edgecompress in editable mode.
#
# Usage:   bash bench/setup_ultralytics_env.sh            # creates bench/.venv-ultralytics (git-ignored)
#          VENV=/some/dir ULTRALYTICS="ultralytics==8.3.40" bash bench/setup_ultralytics_env.sh
# Then:    bench/.venv-ultralytics/bin/python -m pytest -q -p no:cacheprovider tests/models/test_ultralytics_checkpoint.py
# Needs about 12 GB of free disk while installing (check with `df -h`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/bench/.venv-ultralytics}"
PYTHON="${PYTHON:-python3}"
TORCH="${TORCH:-torch==2.14.1}"
TORCHVISION="${TORCHVISION:-torchvision==0.29.1}"
ULTRALYTICS="${ULTRALYTICS:-ultralytics>=8.1}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --upgrade pip
fi
# torch and torchvision first, as a matched pair; everything after must keep them.
nice -n 10 "$VENV/bin/pip" install --quiet "$TORCH" "$TORCHVISION"
nice -n 10 "$VENV/bin/pip" install --quiet "$ULTRALYTICS" "$TORCH" "$TORCHVISION"
nice -n 10 "$VENV/bin/pip" install --quiet -e "$ROOT" pytest pytest-timeout "$TORCH" "$TORCHVISION"
# bench/yolo_bench.py: OpenVINO's latency column, and Torch-Pruning for its --peer (no deps: it must keep this torch).
nice -n 10 "$VENV/bin/pip" install --quiet "openvino>=2024.0"
nice -n 10 "$VENV/bin/pip" install --quiet --no-deps "torch-pruning>=1.5"
"$VENV/bin/python" - <<'EOF'
import torch, torchvision, ultralytics
print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, ultralytics {ultralytics.__version__}")
EOF
