"""What a decode freed goes back to the system (`videoitg.decode.heap`); the served steps call it once a request
that decoded is answered (the frames: tests/python_backend/test_frames.py; the decode step: the soak,
benchmarks/RESULTS.md#soak)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.clips import random_clip
from videoitg.decode import heap

ROOT = Path(__file__).resolve().parents[2]


def test_trim_runs_where_glibc_is() -> None:
    assert heap.trim_freed_memory() is True  # the images we ship are glibc (manylinux wheels need it)


# Run in a process of its own: malloc's count is the whole process's, and a test worker's other threads (servers'
# watchdogs, shared fixtures) allocate too.
MEASURE = """
import gc, os, sys
from pathlib import Path
from videoitg.decode import heap
from videoitg.decode.api import decode_video
from videoitg.launch.perf import distinct_copy
clip, run = Path(sys.argv[1]).read_bytes(), os.urandom(8)
for i in range(50):  # warm: PyAV's and FFmpeg's one-time allocations
    decode_video(distinct_copy(clip, run, i), output="uint8")
gc.collect()
before = heap.in_use_bytes()
for i in range(50, 450):
    decode_video(distinct_copy(clip, run, i), output="uint8")
gc.collect()
print(heap.in_use_bytes() - before)
"""


def test_decoding_video_after_video_leaves_nothing_allocated(tmp_path: Path) -> None:
    """Catches: PyAV 18's demux generator left before its end and not closed (a decode that stops at its last
    sampled frame, the first frame read for the rotation) kept about 1 KiB a video: a served decode step grew for
    as long as it served (the soak, benchmarks/RESULTS.md#soak). 400 decodes: 441 KiB before, tens of KiB now."""
    if heap.in_use_bytes() is None:
        pytest.skip("glibc's mallinfo2 is not available here")
    clip = tmp_path / "clip.mp4"
    random_clip(clip, 7)  # mpeg4, 24 frames, as the soak sends
    done = subprocess.run([sys.executable, "-c", MEASURE, str(clip)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    grown = int(done.stdout.split()[-1])
    assert grown < 100 * 1024, f"400 decodes left {grown / 1024:.0f} KiB allocated"
