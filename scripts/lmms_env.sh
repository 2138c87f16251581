#!/usr/bin/env bash
# Creates (or reuses) lmms-eval's own virtual environment: lmms-eval (pinned below) with this project installed
# editable beside it, CPU-only. lmms-eval pins av<16 and pulls torchvision, which the main environment must not
# have (docs/lmms-eval.md), so it lives apart. Sourced by scripts/test.sh after scripts/bootstrap.sh; exports
# VIDEOITG_LMMS_PYTHON, the interpreter tests/eval/test_lmms.py runs lmms-eval with. VIDEOITG_LMMS_VENV overrides
# where the venv lives (default: the main venv's path + "-lmms").
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LMMS_EVAL="lmms-eval==0.7.3"
# lmms-eval 0.7.3 patches filelock's `filelock._api`, which filelock 4 no longer has ("No module named
# 'filelock._api'" as an evaluation starts)
LMMS_PINS=("filelock<4")
LMMS_VENV="${VIDEOITG_LMMS_VENV:-${VIDEOITG_VENV:-$ROOT/.venv}-lmms}"
PY="${PYTHON:-python3}"
if [ ! -x "$LMMS_VENV/bin/python" ]; then
  echo "[lmms-env] creating lmms-eval's virtual environment in $LMMS_VENV"
  "$PY" -m venv "$LMMS_VENV"
fi
LMMS_STAMP="$LMMS_VENV/.videoitg-install-stamp"
LMMS_WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1) $ROOT"
if [ "$(cat "$LMMS_STAMP" 2>/dev/null)" != "$LMMS_WANT" ]; then
  echo "[lmms-env] installing $LMMS_EVAL and this project (first run takes a few minutes)"
  # torch first, pinned by constraints.txt (the CPU build), as scripts/bootstrap.sh does
  "$LMMS_VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" torch 2> >(grep -v '^WARNING: Location' >&2)
  "$LMMS_VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" "$LMMS_EVAL" "${LMMS_PINS[@]}" -e "$ROOT[lmms]" \
    2> >(grep -v '^WARNING: Location' >&2)
  # lmms-eval requires torchvision; the wheel pip finds is a CUDA build that cannot load beside CPU torch
  # ("operator torchvision::nms does not exist" when transformers imports it). Nothing here uses it.
  "$LMMS_VENV/bin/python" -m pip uninstall -q -y torchvision 2> >(grep -v '^WARNING: Location' >&2)
  echo "$LMMS_WANT" > "$LMMS_STAMP"
fi
export VIDEOITG_LMMS_PYTHON="$LMMS_VENV/bin/python"
