"""Timing on a device without host syncs inside the timed region.

CUDA: one pair of events per call, a single synchronize after the last call, then the elapsed times are read.
CPU: the host clock around each call (CPU ops are synchronous).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], device: torch.device, warmup: int = 1, iters: int = 3) -> list[float]:
    """Seconds per call of `fn`, `iters` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)]
        for start, end in events:
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) / 1e3 for start, end in events]
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def matmul_rate(device: torch.device, dtype: torch.dtype, n: int, iters: int = 10, sets: int = 3,
                warmup: int = 2) -> float:
    """Measured FLOP/s of an n x n x n product on random operands, rotating among `sets` input pairs so repeated
    calls do not just re-read the cache."""
    g = torch.Generator(device=device).manual_seed(0)
    pairs = [
        (torch.randn(n, n, device=device, dtype=torch.float32, generator=g).to(dtype),
         torch.randn(n, n, device=device, dtype=torch.float32, generator=g).to(dtype))
        for _ in range(sets)
    ]
    state = {"i": 0}

    def step() -> None:
        a, b = pairs[state["i"] % sets]
        state["i"] += 1
        torch.mm(a, b)

    secs = median(time_calls(step, device, warmup=warmup, iters=iters))
    return 2 * n**3 / secs
