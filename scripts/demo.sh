#!/usr/bin/env bash
# The main job on the embedded default: bash scripts/demo.sh [videoitg demo args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
python -m videoitg demo "$@"
