#!/usr/bin/env bash
# The whole test suite on a fresh machine: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
# lmms-eval's own environment (it needs av<16 and torchvision, which the main one must not have): tests/eval/test_lmms.py
# runs lmms-eval there, through $VIDEOITG_LMMS_PYTHON
source "$ROOT/scripts/lmms_env.sh"
cd "$ROOT"
ruff check .
# Two workers: most tests wait on a server, a subprocess or Ray as much as they compute, so two take about two
# thirds of one's time on the 2-core CI machine; more would start more tritonservers at once. `-n 0`: one process.
# loadgroup: the groups tests/conftest.py gives the tests on shared servers, and those of each module with servers of
# its own, run in one worker each, so each of those servers starts once; the other tests are spread one by one.
python -m pytest -n 2 --dist loadgroup "$@"
