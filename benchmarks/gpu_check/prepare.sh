#!/usr/bin/env bash
# Here (a CPU machine with PyPI), from the repository root: fetch the wheels the GPU machine lacks into .gpu/
# (in .gitignore, so only the calls that carry a folder of it send it), as the folders the device calls carry. docs/performance.md gives the calls.
#   .gpu/core/       PyAV (decode) - carried by the core, bench and extras calls
#   .gpu/stage-N/    parts of one tar of the extras wheels (DALI, pytriton, numpy 1.x for the Triton stub,
#                    tritonclient, DALI's small Python deps), each part under one call's 64 MiB limit
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
PART_MB=${PART_MB:-56}
rm -rf .gpu && mkdir -p .gpu/core .gpu/extras
get() {  # cp312 manylinux wheels for the GPU machine (Python 3.12, x86-64)
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$@"
}
get .gpu/core av==18.1.0
get .gpu/extras nvidia-dali-cuda130==2.4.0 nvidia-pytriton==0.7.0 numpy==1.26.4 tritonclient==2.51.0 \
  optree gast astunparse
(cd .gpu/extras && tar cf ../extras.tar ./*.whl)
rm -rf .gpu/extras
(cd .gpu && split -b "${PART_MB}m" -d extras.tar extras.tar.part && rm extras.tar)
sha=$(cat .gpu/extras.tar.part* | sha256sum | cut -d' ' -f1)
n=0
for p in .gpu/extras.tar.part*; do
  n=$((n + 1)); mkdir -p ".gpu/stage-$n"; mv "$p" ".gpu/stage-$n/"; echo "$sha" > ".gpu/stage-$n/extras.sha256"
done
echo "$n" > .gpu/core/stage_parts
du -sh .gpu/*
echo "staging calls: $n (carry .gpu/stage-1 ... .gpu/stage-$n, one per call)"
