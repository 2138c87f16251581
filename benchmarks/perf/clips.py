"""Long H.264 clips for the end-to-end and decoder checks, made in seconds: one segment of camera-like content
(`tests.support.video.write_natural_clip`) is encoded once and stream-copied end to end with shifted timestamps, so
the clip decodes exactly like a real one with that GOP structure."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def long_h264_clip(path: Path, seconds: int = 600, width: int = 1280, height: int = 720, fps: int = 10,
                   gop: int = 250, preset: str = "ultrafast") -> Path:
    """A `seconds`-long clip at width x height (default: the end-to-end goals' 10-minute 720p clip, 25 s GOPs)."""
    sys.path.insert(0, str(ROOT))
    from tests.support.video import repeat_clip, write_natural_clip

    path = Path(path)
    if path.exists():
        return path
    seg = path.with_suffix(".segment.mp4")
    write_natural_clip(seg, frames=gop, width=width, height=height, fps=fps, gop=gop,
                       options={"preset": preset, "crf": "30"})
    repeat_clip(seg, path, max(1, seconds * fps // gop))
    seg.unlink()
    return path
