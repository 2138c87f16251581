#!/usr/bin/env bash
# Creates (or reuses) lmms-eval's own virtual environment: lmms-eval (pinned below) with this project installed
# editable beside it, CPU-only. lmms-eval pins av<16 and pulls torchvision, which the main environment must not
# have (docs/lmms-eval.md), so it lives apart. Sourced by scripts/test.sh after scripts/bootstrap.sh; exports
# VIDEOITG_LMMS_PYTHON, the interpreter tests/lmms/test_model.py runs lmms-eval with. VIDEOITG_LMMS_VENV overrides
# where the venv lives (default: the main venv's path + "-lmms").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LMMS_EVAL="lmms-eval==0.7.3"
# lmms-eval 0.7.3 patches filelock's `filelock._api`, which filelock 4 no longer has ("No module named
# 'filelock._api'" as an evaluation starts)
LMMS_PINS=("filelock<4")
LMMS_VENV="${VIDEOITG_LMMS_VENV:-${VIDEOITG_VENV:-$ROOT/.venv}-lmms}"
source "$ROOT/scripts/venv.sh"
if install_due "$LMMS_VENV" lmms-env "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "${BASH_SOURCE[0]}"; then
  pip_in "$LMMS_VENV" install -c "$ROOT/constraints.txt" torch
  pip_in "$LMMS_VENV" install -c "$ROOT/constraints.txt" "$LMMS_EVAL" "${LMMS_PINS[@]}" -e "$ROOT[lmms]"
  # lmms-eval requires torchvision; the wheel pip finds is a CUDA build that cannot load beside CPU torch
  # ("operator torchvision::nms does not exist" when transformers imports it). Nothing here uses it.
  pip_in "$LMMS_VENV" uninstall -y torchvision
  installed "$LMMS_VENV"
fi
export VIDEOITG_LMMS_PYTHON="$LMMS_VENV/bin/python"
