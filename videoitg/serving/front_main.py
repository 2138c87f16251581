"""The front's process: its HTTP, gRPC and metrics ports (front.py, front_grpc.py) sharing one held-bytes budget,
until SIGINT or SIGTERM.

    python -m videoitg.serving.front_main CONFIG_JSON    # started and stopped by `TritonServer` (server.py)
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import resource
import signal
import sys

from videoitg.serving.front import ByteBudget, FrontConfig, FrontCounters, held_budget, start_http, stop_http

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
TRIM_BYTES = 64 << 20  # request bytes released since the budget's high mark that make the heap worth trimming
TRIM_EVERY_S = 1.0


async def serve(cfg: FrontConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from videoitg.serving.front_grpc import GrpcPort  # h2 and grpcio: the launcher imports this module without them

    counters = FrontCounters()
    budget = held_budget(cfg)
    runners, listeners = await start_http(cfg, counters, budget)
    grpc_server = GrpcPort(cfg, counters, budget)
    await grpc_server.start()
    trimmer = asyncio.ensure_future(trim_after_release(budget))
    print(f"videoitg front: http {cfg.host}:{cfg.http_port} grpc {cfg.host}:{cfg.grpc_port} metrics "
          f"{cfg.host}:{cfg.metrics_port} -> tritonserver {cfg.triton_http}; models {', '.join(cfg.models)}",
          flush=True)
    await stop.wait()
    trimmer.cancel()
    await asyncio.gather(grpc_server.stop(cfg.shutdown_s), stop_http(runners, listeners))


async def trim_after_release(budget: ByteBudget) -> None:
    """Heap pages back to the system once TRIM_BYTES of request bytes were released: a gRPC message arrives as
    many 64 KiB frames, below the mmap threshold, and glibc keeps the heap they leave fragmented until asked
    (figures: RELIABILITY.md, "Hostile clients of the front")."""
    while True:
        await asyncio.sleep(TRIM_EVERY_S)
        if budget.high - budget.held >= TRIM_BYTES and trim_freed_memory():
            budget.high = budget.held


def trim_freed_memory() -> bool:
    """glibc's malloc_trim(0): free pages anywhere in the heap returned to the system. False without glibc."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def environment(base: dict[str, str]) -> dict[str, str]:
    """The front's process environment: `base` with glibc's `malloc.hugetlb=1` tunable, so the large blocks below
    (mmap'd, a gRPC message whole) are backed by transparent huge pages where the kernel offers them on request
    (`madvise` or `always` mode): a 32 MiB message faults in 16 pages, not 8192. A tunable already set wins;
    glibc before 2.35 ignores it."""
    tunables = base.get("GLIBC_TUNABLES", "")
    if "glibc.malloc.hugetlb=" in tunables:
        return dict(base)
    return {**base, "GLIBC_TUNABLES": ":".join(t for t in (tunables, "glibc.malloc.hugetlb=1") if t)}


def return_freed_memory() -> bool:
    """Request bodies straight from the OS and back: a fixed glibc mmap threshold of 1 MiB. By default glibc raises
    the threshold after the first large free, and later bodies grow in the heap, which keeps what they held
    (the front's RSS reached 1.15 GB holding 640 MB of bodies). False where there is no glibc."""
    try:
        return ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1
    except (OSError, AttributeError):
        return False


def raise_open_file_limit() -> int:
    """The soft open-file limit raised to the hard one (at most 2^20): the connection caps of the HTTP, gRPC and
    metrics ports and the pooled connections toward tritonserver together can pass the common soft limit of 1024.
    Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return soft
        return want
    return soft


def main(argv: list[str]) -> int:
    raw = json.loads(argv[0])
    cfg = FrontConfig(**{**raw, "models": tuple(raw["models"])})
    return_freed_memory()
    raise_open_file_limit()
    asyncio.run(serve(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
