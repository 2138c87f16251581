#!/usr/bin/env bash
# The whole test suite on a fresh machine: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
ruff check .
# Two workers: most tests wait on a server, a subprocess or Ray as much as they compute, so two take about two
# thirds of one's time on the 2-core CI machine; more would start more tritonservers at once. `-n 0`: one process.
python -m pytest -n 2 "$@"
