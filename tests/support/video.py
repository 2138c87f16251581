"""Small generated video clips for the tests (PyAV encoders; no files checked in).

Every frame of `write_clip` carries its own frame number as 8 horizontal bands (band b bright when bit b of
the number is set), readable after any codec and any squash-resize, so a test can check that the decoder
returned exactly the frames it claims. Malformed files (audio only, an empty stream, an unknown codec, a truncated
file) test the decoder's errors. The clips the benchmarks make too (random, camera-like, colour edges, photographic,
long stream copies) live in `benchmarks.clips`, where the tests import them from.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from benchmarks.clips import video_stream
from videoitg.moments import MomentParams

BITS = 8
LO, HI = 16, 235


def pattern(i: int, width: int, height: int, marker: bool = False) -> np.ndarray:
    """RGB frame whose bands encode `i`; `marker` adds a red square top-left (shows rotation)."""
    img = np.empty((height, width, 3), np.uint8)
    edges = np.linspace(0, height, BITS + 1).astype(int)
    for b in range(BITS):
        img[edges[b]:edges[b + 1]] = HI if (i >> b) & 1 else LO
    if marker:
        img[: height // 4, : width // 4] = (220, 20, 20)
    return img


def read_number(frame: np.ndarray) -> int:
    """Inverse of `pattern` for a [S,S,3] uint8 frame or a [3,S,S] tensor in [-1, 1]."""
    a = np.asarray(frame, dtype=np.float32)
    if a.shape[0] == 3 and a.ndim == 3:
        a = (a.transpose(1, 2, 0) + 1.0) * 127.5
    rows = a.mean(axis=(1, 2))
    edges = np.linspace(0, a.shape[0], BITS + 1)
    n = 0
    for b in range(BITS):
        mid = int((edges[b] + edges[b + 1]) / 2)
        if rows[mid] > (LO + HI) / 2:
            n |= 1 << b
    return n


def write_clip(path: Path, *, codec: str = "libx264", frames: int = 30, width: int = 96, height: int = 64,
               fps: int = 25, pts: list[int] | None = None, time_base: Fraction | None = None,
               rotation: int | None = None, gop: int | None = None, marker: bool = False,
               audio: bool = False, options: dict[str, str] | None = None, faststart: bool = False) -> Path:
    """Encode a numbered clip. `pts` (with `time_base`) gives each frame's timestamp: variable frame rate."""
    path = Path(path)
    container_opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_opts) as out:
        s = video_stream(out, codec, fps, width, height, gop, options)
        if time_base is not None:
            s.time_base = time_base
            s.codec_context.time_base = time_base
        if rotation is not None:
            s.set_display_rotation(rotation)
        a = None
        if audio:
            a = out.add_stream("aac", rate=8000)
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(pattern(i, width, height, marker), format="rgb24")
            if pts is not None:
                f.pts, f.time_base = pts[i], time_base
            for p in s.encode(f):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
        if a is not None:
            _write_audio(out, a, seconds=frames / fps)
    return path


def _write_audio(out: av.container.OutputContainer, a: av.audio.stream.AudioStream, seconds: float) -> None:
    rate = a.codec_context.sample_rate
    n = int(rate * seconds)
    t = np.arange(n) / rate
    samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
    frame.sample_rate = rate
    for p in a.encode(frame):
        out.mux(p)
    for p in a.encode():
        out.mux(p)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as out:
        a = out.add_stream("aac", rate=8000)
        _write_audio(out, a, seconds)
    return Path(path)


def write_empty_stream(path: Path) -> Path:
    """An AVI file with a video track and no frame in it (FFmpeg drops empty MP4 tracks, and an empty
    Matroska file fails to open, which reads as truncation)."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuvj420p"
        out.start_encoding()
    return Path(path)


def unknown_codec(src_mkv: Path, dst: Path) -> Path:
    """Rename the Matroska CodecID of a clip to one no decoder knows (same length: the file stays valid)."""
    data = Path(src_mkv).read_bytes()
    old, new = b"V_MJPEG", b"V_XQZJG"
    assert old in data, "fixture expects an MJPEG Matroska clip"
    Path(dst).write_bytes(data.replace(old, new, 1))
    return Path(dst)


def truncate(src: Path, dst: Path, keep: float) -> Path:
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep)])
    return Path(dst)


# level = the lowest score: one moment, the whole video, whatever the scores
WHOLE = MomentParams(thresholds=(0.0,))


def ntsc_clip(path: Path) -> Path:
    """4,495 frames at 30000/1001 fps: 149.983 s. Sampled at 1 fps, the last frame is at 149.149 s, and one
    1.001-s frame gap past it is 150.15 s, past the video's end."""
    return write_clip(path, frames=4495, fps=Fraction(30000, 1001), width=64, height=48, gop=30)
