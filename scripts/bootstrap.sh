#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and installs everything, CPU-only.
# Sourced by scripts/demo.sh and scripts/test.sh. VIDEOITG_VENV overrides where the venv lives.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VIDEOITG_VENV:-$ROOT/.venv}"
source "$ROOT/scripts/venv.sh"
if install_due "$VENV" bootstrap "$ROOT/pyproject.toml" "$ROOT/constraints.txt"; then
  pip_in "$VENV" install -c "$ROOT/constraints.txt" torch  # first, so nothing later resolves torch anew
  pip_in "$VENV" install -c "$ROOT/constraints.txt" -e "$ROOT[all,dev]"
  installed "$VENV"
fi
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
