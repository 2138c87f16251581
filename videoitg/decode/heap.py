"""glibc's freed heap memory handed back to the system (`trim_freed_memory`). A decode allocates its buffers in
the arenas of the threads it runs on (its worker, PyAV's and FFmpeg's); glibc keeps what they free, fragmented, so a
process decoding video after video holds more than it uses. `python -m benchmarks.decode.decode_memory` (4,000
decodes of the sample clip, 4 at a time): 74 to 81 MiB with a trim after each, 97 to 103 MiB without; the trim takes
1.7 ms beside a 107 ms decode (2 cores, 2026-11-28). Both arms still grow about 1.8 KiB a decode (not found). The
served steps trim once a request that decoded is answered (the decode step, the top-level model's frames). Not inside
a streamed decode: there it moved the step's time into its sends, where a requester that dies leaves the send
blocked (Triton 2.51)."""

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
