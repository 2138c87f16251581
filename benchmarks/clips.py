"""Generated video clips for the benchmarks and the tests (PyAV encoders; no files checked in): random content
(a new cache key per seed), camera-like content, saturated colour edges, a photograph seen through a moving camera,
and long clips made by stream-copying one encoded segment. The tests' frame-numbered and malformed clips are in
tests/support/video.py."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from matplotlib import cbook
from PIL import Image


def video_stream(out: Any, codec: str, fps: int, width: int, height: int, gop: int | None,
                 options: dict[str, str] | None):
    """A video stream set up for fast, small test clips (ultrafast x264, realtime VP8/VP9)."""
    s = out.add_stream(codec, rate=fps)
    s.width, s.height = width, height
    s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("preset", "ultrafast")
    if codec.startswith("libvpx"):
        opts = {"deadline": "realtime", "cpu-used": "8", **opts}
    if gop:
        s.gop_size = gop
    s.options = opts
    return s


def natural_frame(i: int, width: int, height: int, seed: int = 0) -> np.ndarray:
    """Camera-like content for timing and parity: moving colour gradients, a moving disc, sensor noise."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    t = i / 25.0
    r = 127 + 100 * np.sin(x / width * 6.28 + t)
    g = 127 + 100 * np.sin(y / height * 6.28 - 0.7 * t)
    b = 127 + 100 * np.sin((x + y) / (width + height) * 12.0 + 1.3 * t)
    img = np.stack([r, g, b], axis=-1)
    cx, cy = width * (0.5 + 0.35 * np.sin(t)), height * (0.5 + 0.35 * np.cos(0.8 * t))
    disc = (x - cx) ** 2 + (y - cy) ** 2 < (min(width, height) / 6) ** 2
    img[disc] = (240, 200, 40)
    rng = np.random.default_rng(seed + i)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_natural_clip(path: Path, *, codec: str = "libx264", frames: int = 50, width: int = 320,
                       height: int = 240, fps: int = 25, gop: int | None = None,
                       options: dict[str, str] | None = None, distinct: int = 50) -> Path:
    """Like `write_clip` with `natural_frame` content; only `distinct` frames are rendered and then cycled,
    which keeps generating long clips cheap (the encoder still sees motion everywhere)."""
    cache = [natural_frame(i, width, height) for i in range(min(distinct, frames))]
    vpx = {"row-mt": "1"} if codec.startswith("libvpx") else {}
    return write_rgb_clip(path, (cache[i % len(cache)] for i in range(frames)), codec=codec, fps=fps, gop=gop,
                          options={**vpx, **(options or {})})


def colour_edges_frame(i: int, width: int, height: int) -> np.ndarray:
    """Worst case for chroma subsampling: saturated colour blocks of every size (1 px up), edges at odd and even
    positions, on black."""
    rng = np.random.default_rng(1000 + i)
    img = np.zeros((height, width, 3), np.uint8)
    for _ in range(width * height // 200):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        img[y0:y0 + rng.integers(1, 24), x0:x0 + rng.integers(1, 24)] = rng.choice([0, 255], 3)
    return img


def photo_frame(i: int, width: int, height: int) -> np.ndarray:
    """Real photographic content: the sample photograph matplotlib ships (a portrait, 512x600), seen through a
    slowly panning and zooming window (a camera move), squashed to width x height."""
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        img = Image.open(f).convert("RGB")
    iw, ih = img.size
    zoom = 0.6 + 0.02 * i
    cw, ch = int(iw * zoom), int(ih * zoom * 0.75)
    x0, y0 = (iw - cw) * (0.2 + 0.05 * i) % max(1, iw - cw), (ih - ch) * (0.3 + 0.04 * i) % max(1, ih - ch)
    box = (int(x0), int(y0), int(x0) + cw, int(y0) + ch)
    return np.asarray(img.resize((width, height), Image.BICUBIC, box=box))


def write_rgb_clip(path: Path, frames: Iterable[np.ndarray], *, codec: str = "libvpx-vp9", fps: int = 25,
                   gop: int | None = None, options: dict[str, str] | None = None, colorspace: int | None = None,
                   color_range: int | None = None, pix_fmt: str | None = None) -> Path:
    """Encode RGB frames (a list or a generator); `colorspace` / `color_range` tag the stream (FFmpeg's AVColorSpace
    / AVColorRange numbers, e.g. 1 = BT.709, 2 = full range), as cameras and phones tag theirs; `pix_fmt` other
    than 4:2:0 (e.g. "yuv444p", "yuvj422p")."""
    path = Path(path)
    first, frames = peek(frames)
    h, w = first.shape[:2]
    with av.open(str(path), "w") as out:
        s = video_stream(out, codec, fps, w, h, gop, options)
        if pix_fmt is not None:
            s.pix_fmt = pix_fmt
        if colorspace is not None:
            s.codec_context.colorspace = colorspace
        if color_range is not None:
            s.codec_context.color_range = color_range
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def repeat_clip(segment: Path, path: Path, reps: int) -> Path:
    """Stream-copy `segment` `reps` times end to end with shifted timestamps (no re-encode): a long clip that
    decodes exactly like a real one of the segment's GOP structure, made in seconds instead of an hour."""
    with av.open(str(segment)) as src:
        ins = src.streams.video[0]
        packets = [p for p in src.demux(ins) if p.size]
        ticks = [p.pts for p in packets]
        span = max(ticks) - min(ticks) + int(round(1 / (float(ins.average_rate) * ins.time_base)))
        with av.open(str(path), "w") as dst:
            out = dst.add_stream_from_template(ins)
            for k in range(reps):
                for p in packets:
                    q = av.Packet(bytes(p))
                    q.pts, q.dts, q.time_base = p.pts + k * span, p.dts + k * span, ins.time_base
                    q.is_keyframe = p.is_keyframe
                    q.stream = out
                    dst.mux(q)
    return Path(path)


def peek(frames: Iterable[np.ndarray]) -> tuple[np.ndarray, Iterator[np.ndarray]]:
    """(the first frame, all the frames)."""
    it = iter(frames)
    first = next(it)
    return first, itertools.chain((first,), it)


def random_clip(path: Path, seed: int, seconds: int = 6, fps: int = 4, size: int = 64) -> bytes:
    """A short random-content clip (mpeg4), distinct per seed: a fresh cache key, i.e. a cold request."""
    rng = np.random.default_rng(seed)
    frames = (rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(seconds * fps))
    return write_rgb_clip(path, frames, codec="mpeg4", fps=fps).read_bytes()
