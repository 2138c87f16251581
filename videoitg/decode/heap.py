"""glibc's freed heap memory handed back to the system (`trim_freed_memory`), and what is still allocated
(`in_use_bytes`). A decode allocates its buffers in the arenas of the threads it runs on (its worker, PyAV's and
FFmpeg's); glibc keeps what they free, fragmented, so a process decoding video after video holds more than it uses.
`python -m benchmarks.decode.decode_memory` (3,000 decodes of the sample clip, 4 at a time): 78.4 to 80.7 MiB with
a trim after each, 86.3 to 96.7 MiB without; the trim takes 1.8 ms beside a 113 ms decode (2 cores, 2026-11-29). The
served steps trim once a request that decoded is answered (the decode step, the top-level model's frames). Not
inside a streamed decode: there it moved the step's time into its sends, where a requester that dies leaves the
send blocked (Triton 2.51)."""

from __future__ import annotations

import ctypes
from functools import cache


@cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 (musl has no malloc_trim)
    except (OSError, AttributeError):
        return None
    return libc


def trim_freed_memory() -> bool:
    """glibc's malloc_trim(0): free pages anywhere in the heap, in every arena, returned to the system. False
    without glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def in_use_bytes() -> int | None:
    """Bytes glibc's malloc has handed out and not had back, in every arena and mmap'd (mallinfo2: `uordblks` +
    `hblkhd`): what a leak grows, where resident memory also grows with fragmentation. None without glibc 2.33."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)
