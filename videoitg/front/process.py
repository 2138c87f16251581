"""The front's process settings: its environment (huge pages for large blocks), glibc's memory returned to the
system, and its open-file limit."""

from __future__ import annotations

import asyncio
import ctypes
import resource

from videoitg.decode.heap import trim_freed_memory
from videoitg.front.bounds import ByteBudget
from videoitg.front.config import METRICS_CONNECTIONS

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
TRIM_BYTES = 64 << 20  # request bytes released since the budget's high mark that make the heap worth trimming
TRIM_EVERY_S = 1.0
# Descriptors beside the client connections and theirs toward tritonserver: the listeners, the event loop's,
# grpcio's channel and threads, the log, libraries' files.
RESERVED_FILES = 128


async def trim_after_release(budget: ByteBudget) -> None:
    """Heap pages back to the system once TRIM_BYTES of request bytes were released: a gRPC message arrives as
    many 64 KiB frames, below the mmap threshold, and glibc keeps the heap they leave fragmented until asked
    (figures: docs/reliability/front.md)."""
    while True:
        await asyncio.sleep(TRIM_EVERY_S)
        if budget.high - budget.held >= TRIM_BYTES and trim_freed_memory():
            budget.high = budget.held


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
    """The soft open-file limit raised to the hard one (at most 2^20), so the connection caps can be set from the
    hard limit rather than the common soft one of 1024 (`connection_cap`). Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else min(hard, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            return soft
        return want
    return soft


def connection_cap(limit: int, wanted: int) -> int:
    """The HTTP and gRPC ports' connection cap (at most `wanted`) that fits an open-file limit: an HTTP connection
    may hold one toward tritonserver too (pooled, while its request is answered), gRPC calls share one channel, the
    metrics port's connections each may hold one, and RESERVED_FILES stay free. Past the cap a new connection takes
    the place of an idle one, so descriptors never run out (where accept() fails, asyncio stops accepting for 1 s)."""
    return max(1, min(wanted, (limit - RESERVED_FILES - 2 * METRICS_CONNECTIONS) // 3))
