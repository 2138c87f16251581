"""What a decode freed goes back to the system (`videoitg.decode.heap`); the served steps call it once a request
that decoded is answered (the frames: tests/python_backend/test_frames.py; the decode step: the soak,
benchmarks/RESULTS.md#soak)."""

from __future__ import annotations

from videoitg.decode import heap


def test_trim_runs_where_glibc_is() -> None:
    assert heap.trim_freed_memory() is True  # the images we ship are glibc (manylinux wheels need it)
