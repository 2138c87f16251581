"""The digest that names a video's bytes: the feature cache's key, the client's digest-first request and the
routing key over several servers all use this one function."""

from __future__ import annotations

import mmap
import os

from blake3 import blake3

# Below this size one thread hashes faster than starting more (BLAKE3 splits larger inputs over all cores).
_THREADED_FROM = 1 << 22


def video_digest(video: bytes | bytearray | memoryview) -> str:
    """BLAKE3-256 of the encoded video, hex: ~3.5 GB/s a core (4.4x sha256 with SHA-NI on 2 cores,
    benchmarks/results/serving.md), multithreaded for large inputs, and collision resistant."""
    threads = blake3.AUTO if len(video) >= _THREADED_FROM else 1
    return "b3:" + blake3(video, max_threads=threads).hexdigest()


def video_file_digest(fd: int) -> str:
    """`video_digest` of the video in the open file `fd` (from its start, whatever its offset), read through a memory
    map: a long video is hashed where it lies, without a copy in memory."""
    if os.fstat(fd).st_size == 0:
        return video_digest(b"")
    with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as view:
        return video_digest(view)
