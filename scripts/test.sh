#!/usr/bin/env bash
# The whole test suite on a fresh machine: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
# lmms-eval's own environment (it needs av<16 and torchvision, which the main one must not have): tests/lmms/test_model.py
# runs lmms-eval there, through $VIDEOITG_LMMS_PYTHON
source "$ROOT/scripts/lmms_env.sh"
cd "$ROOT"
# The server page's browser tests (tests/front/test_page_browser.py) drive Debian's chromium through its chromedriver:
# installed here where they are missing and this script may (root, apt-get), quietly; where that fails the tests skip
# saying why (in CI, .ci/run, they fail).
if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
  browser=(env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver)
  { "${browser[@]}" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && "${browser[@]}" >/dev/null 2>&1; }; } \
    || echo "scripts/test.sh: could not install chromium and chromium-driver (apt-get); the page's browser tests skip" >&2
fi
ruff check .
# Bytecode caches on, whatever the shell says: the suite starts about 200 Python processes (the servers' python
# stubs, command-line runs, Ray workers), each of which would otherwise compile the project's modules again.
unset PYTHONDONTWRITEBYTECODE
# Three workers on the 2-core CI machine: many tests wait on a server, a subprocess or Ray, and a third worker fills
# those waits (pytest 624 s against 696 s with two, one run after the other: benchmarks/RESULTS.md#the-test-suite);
# each worker may run a module's own tritonservers, about 1.3 GB resident each. `-n 0`: one process.
# loadgroup: the groups tests/conftest.py gives the tests on shared servers, and those of each module with servers of
# its own, run in one worker each, so each of those servers starts once; the other tests are spread one by one.
python -m pytest -n 3 --dist loadgroup "$@"
