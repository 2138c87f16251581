"""The long H.264 clips of the end-to-end benchmark (the goals in docs/performance.md), made once and cached.

Each clip is one encoded segment of camera-like content (`benchmarks.clips.write_natural_clip`) stream-copied end
to end (`repeat_clip`): it decodes exactly like a real clip with that GOP structure and takes a minute to make
instead of an hour of encoding on 2 cores.

    python -m benchmarks.decode.e2e_clips [--cache DIR] [NAME ...]     # make them (nice it: it is CPU-bound)
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.clips import repeat_clip, write_natural_clip

CACHE = Path.home() / ".cache" / "videoitg" / "bench"


@dataclass(frozen=True)
class ClipSpec:
    width: int
    height: int
    fps: int
    segment_frames: int
    gop: int  # keyframe interval, frames
    seconds: int
    options: dict[str, str] = field(default_factory=dict)  # libx264 options
    note: str = ""

    def segment_name(self) -> str:
        opts = "_".join(f"{k}{v}" for k, v in sorted(self.options.items()))
        return f"seg_{self.height}p{self.fps}_gop{self.gop}_{opts}_{self.segment_frames}f.mp4"


CLIPS: dict[str, ClipSpec] = {
    # the reference clip of the end-to-end goals: every frame a reference frame (no B-frames), 25 s GOPs
    "720p10-ultrafast": ClipSpec(1280, 720, 10, 250, 250, 600, {"preset": "ultrafast", "crf": "30"},
                                 "10 min 720p 10 fps, x264 ultrafast crf 30, 25 s GOPs, no B-frames"),
    # x264 defaults (preset medium: 3 B-frames, b-pyramid), 2 s GOPs
    "1080p30-bframes": ClipSpec(1920, 1080, 30, 300, 60, 600, {"preset": "medium"},
                                "10 min 1080p 30 fps, x264 defaults (B-frames), 2 s GOPs"),
    "1080p30-60min": ClipSpec(1920, 1080, 30, 300, 60, 3600, {"preset": "medium"},
                              "60 min 1080p 30 fps, x264 defaults (B-frames), 2 s GOPs"),
}


def clip(name: str, cache: Path = CACHE, spec: ClipSpec | None = None) -> Path:
    """The cached clip `name` (one of CLIPS, or `spec` under that name), made on first use."""
    spec = spec or CLIPS[name]
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"{name}.mp4"
    if path.exists():
        return path
    seg = cache / spec.segment_name()
    if not seg.exists():
        write_natural_clip(seg.with_suffix(".part.mp4"), frames=spec.segment_frames, width=spec.width,
                           height=spec.height, fps=spec.fps, gop=spec.gop, options=spec.options)
        seg.with_suffix(".part.mp4").rename(seg)
    reps = spec.seconds * spec.fps // spec.segment_frames
    tmp = path.with_suffix(".part.mp4")
    repeat_clip(seg, tmp, reps)
    tmp.rename(path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=list(CLIPS), help=f"clips to make: {', '.join(CLIPS)}")
    ap.add_argument("--cache", type=Path, default=CACHE)
    args = ap.parse_args()
    for name in args.names:
        t0 = time.perf_counter()
        p = clip(name, args.cache)
        print(f"{name}: {p} ({p.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
