"""The digest that names a video's bytes: the feature cache's key, the client's digest-first request and the
routing key over several servers all use this one function."""

from __future__ import annotations

import os

from blake3 import blake3

# Below this size one thread hashes faster than starting more (BLAKE3 splits larger inputs over all cores).
_THREADED_FROM = 1 << 22


def video_digest(video: bytes | bytearray | memoryview) -> str:
    """BLAKE3-256 of the encoded video, hex: ~3.5 GB/s a core (4.4x sha256 with SHA-NI on 2 cores,
    benchmarks/results/serving.md), multithreaded for large inputs, and collision resistant."""
    threads = blake3.AUTO if len(video) >= _THREADED_FROM else 1
    return "b3:" + blake3(video, max_threads=threads).hexdigest()


READ_CHUNK = 8 << 20  # bytes of a file hashed at once


def video_file_digest(fd: int) -> str:
    """`video_digest` of the video in the open file `fd` (from its start, whatever its offset), read in pieces of
    READ_CHUNK bytes into one buffer: a long video is hashed without a copy of it in memory, and a file cut while it
    is read ends the read (an OSError, or fewer bytes) instead of faulting on a page that is gone."""
    h = blake3(max_threads=blake3.AUTO)
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    at = 0
    while n := os.preadv(fd, [buf], at):
        h.update(view[:n])
        at += n
    return "b3:" + h.hexdigest()
