"""The start check's cost: `videoitg.model.checkpoint.check_values` (every weight read once for NaN or infinity)
over a bfloat16 safetensors file in the page cache, against an `isfinite` mask of the same tensors.

    python -m benchmarks.model.bench_checkpoint_scan [--gib 1] [--rounds 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from videoitg.model.checkpoint import check_values

TENSOR = 1 << 23  # bfloat16 elements a tensor: 16 MiB, a mid-sized weight of the released model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "model.safetensors"
        names = [f"w{i}" for i in range(64 * args.gib)]
        save_file({n: torch.randn(TENSOR, dtype=torch.bfloat16) for n in names}, str(f))
        index = {n: (f, n, torch.Size([TENSOR])) for n in names}
        check_values(index, names, "warm-up")  # the file into the page cache
        for _ in range(args.rounds):
            t0 = time.perf_counter()
            check_values(index, names, "scan")
            scan = (time.perf_counter() - t0) / args.gib
            t0 = time.perf_counter()
            with safe_open(str(f), framework="pt") as sf:
                assert all(bool(torch.isfinite(sf.get_tensor(n)).all()) for n in names)
            mask = (time.perf_counter() - t0) / args.gib
            print(f"check_values {scan:.2f} s/GiB; isfinite mask {mask:.2f} s/GiB (torch threads "
                  f"{torch.get_num_threads()})")


if __name__ == "__main__":
    main()
