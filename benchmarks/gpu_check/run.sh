#!/usr/bin/env bash
# On the GPU machine, from the repository root (docs/performance.md gives each device call):
#   bash benchmarks/gpu_check/run.sh core     # carry .gpu/core: parity, videoitg score --device cuda, training
#   bash benchmarks/gpu_check/run.sh bench    # carry .gpu/core: benchmarks/bench_gpu_path.py
#   bash benchmarks/gpu_check/run.sh stage    # carry .gpu/stage-N: keep one part of the extras on this machine
#   bash benchmarks/gpu_check/run.sh extras   # carry .gpu/core: NVDEC, the served GPU repository, end to end
# Installs nothing from a network: PyAV and the extras come from what was carried; this project from the checkout.
set -uo pipefail
PART=${1:?usage: run.sh core|bench|stage|extras}
OUT=${OUT:-/tmp/videoitg-out}
SITE=/tmp/videoitg-site
STAGE=/tmp/videoitg-stage
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$SITE" "$STAGE"
pip_in() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir "$@"; }

if [ "$PART" = stage ]; then
  cp .gpu/stage-*/* "$STAGE"/ && ls -la "$STAGE"
  echo "parts here: $(ls "$STAGE"/extras.tar.part* 2>/dev/null | wc -l)"
  exit 0
fi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv || true
pip_in --target "$SITE" .gpu/core/*.whl || exit 1
pip_in --no-build-isolation --target "$SITE" . || exit 1   # this project, with videoitg.train etc. in place
export PYTHONPATH="$SITE:$PWD"

case "$PART" in
  core) python3 -m benchmarks.gpu_check --part core --out "$OUT" ;;
  bench) python3 benchmarks/bench_gpu_path.py --out "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" ;;
  extras)
    want=$(cat .gpu/core/stage_parts)
    have=$(ls "$STAGE"/extras.tar.part* 2>/dev/null | wc -l)
    if [ "$have" != "$want" ]; then
      echo "staged parts: $have of $want (a fresh machine loses them: run the stage calls again, back to back)"
      exit 3
    fi
    cat "$STAGE"/extras.tar.part* > /tmp/extras.tar
    [ "$(sha256sum < /tmp/extras.tar | cut -d' ' -f1)" = "$(cat "$STAGE"/extras.sha256)" ] || { echo "bad sha"; exit 4; }
    mkdir -p /tmp/extras /tmp/videoitg-numpy1 && tar xf /tmp/extras.tar -C /tmp/extras && rm /tmp/extras.tar
    pip_in --target /tmp/videoitg-numpy1 /tmp/extras/numpy-1.*.whl || exit 1
    pip_in --target "$SITE" $(ls /tmp/extras/*.whl | grep -v '/numpy-1') || exit 1
    export VIDEOITG_NUMPY1_DIR=/tmp/videoitg-numpy1
    python3 -m benchmarks.gpu_check --part extras --out "$OUT" ;;
  *) echo "unknown part $PART"; exit 2 ;;
esac
