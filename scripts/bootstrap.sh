#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs everything, CPU-only.
# Sourced by scripts/demo.sh and scripts/test.sh. VIDEOITG_VENV overrides where the venv lives.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VIDEOITG_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.videoitg-install-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1) $ROOT"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  echo "[bootstrap] installing dependencies (first run takes a few minutes)"
  # torch first, pinned by constraints.txt: a bare 'torch' would pull several GB of CUDA wheels on a CPU machine.
  # (this machine's extra local indexes make pip warn about every missing folder: filter that noise only)
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" torch 2> >(grep -v '^WARNING: Location' >&2)
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[all,dev]" \
    2> >(grep -v '^WARNING: Location' >&2)
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
