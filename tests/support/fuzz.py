"""What the fuzz suites share: the example budget, the findings report, the seed clips and their mutations, and the
FFmpeg errors found (deterministic cases that replay anywhere)."""

from __future__ import annotations

import json
import os
import struct
import tempfile
from collections import Counter
from pathlib import Path

import av
import av.error
import numpy as np
from hypothesis import HealthCheck, settings

from videoitg.decode import DecodeLimits

# 0: the small CI sizes each test names; a documented long run sets e.g. VIDEOITG_FUZZ_EXAMPLES=5000
SCALE = int(os.environ.get("VIDEOITG_FUZZ_EXAMPLES", "0"))


def fuzz(ci_examples: int, *also_suppress: HealthCheck) -> settings:
    return settings(max_examples=SCALE or ci_examples, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, *also_suppress])


def write_report(name: str, counts: Counter[str]) -> None:
    """Outcome counts -> $VIDEOITG_FUZZ_REPORT/<name>.json (the figures in docs/reliability.md)."""
    out = os.environ.get("VIDEOITG_FUZZ_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(dict(sorted(counts.items())), indent=1))


# (container format, codec, muxer options): every seed is bit-exact, so a failing case replays anywhere.
SEEDS = {
    "h264.mp4": ("mp4", "libx264", {}),
    "h264-faststart.mp4": ("mp4", "libx264", {"movflags": "faststart"}),
    "vp9.webm": ("webm", "libvpx-vp9", {}),
    "mjpeg.avi": ("avi", "mjpeg", {}),
    "h264.mkv": ("matroska", "libx264", {}),
    "mpeg4.ts": ("mpegts", "mpeg4", {}),
}


_SEED_BYTES: dict[str, bytes] = {}


def seed_bytes(name: str) -> bytes:
    if name not in _SEED_BYTES:
        _SEED_BYTES[name] = encode_seed(*SEEDS[name])
    return _SEED_BYTES[name]


def encode_seed(fmt: str, codec: str, muxer_options: dict[str, str], frames: int = 12, w: int = 48, h: int = 32,
                fps: int = 6) -> bytes:
    """A 2 s clip, keyframe every 4 frames; bitexact muxing and one encoder thread make the bytes reproducible
    (Matroska otherwise writes random UIDs)."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"seed.{fmt}"
        with av.open(str(path), "w", format=fmt, options={"fflags": "+bitexact", **muxer_options}) as out:
            s = out.add_stream(codec, rate=fps)
            s.width, s.height, s.gop_size = w, h, 4
            s.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if codec == "libx264":
                s.options = {"preset": "ultrafast", "threads": "1"}
            elif codec.startswith("libvpx"):
                s.options = {"deadline": "realtime", "cpu-used": "8", "threads": "1"}
            for i in range(frames):
                img = np.zeros((h, w, 3), np.uint8)
                img[:, : (i * 4) % w] = 200
                img[: h // 2, :, 1] = 30 * i % 255
                for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(p)
            for p in s.encode():
                out.mux(p)
        return path.read_bytes()


INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]


def mutate(data: bytes, ops: list[tuple]) -> bytes:
    b = bytearray(data)
    for op in ops:
        n = max(len(b), 1)
        kind, at = op[0], int(op[1] * n) % n
        if kind == "flip" and b:
            b[at] ^= op[2]
        elif kind == "int":
            v = op[2] & ((1 << (8 * op[3])) - 1)
            b[at:at + op[3]] = struct.pack(">Q", v)[-op[3]:]
        elif kind == "insert":
            b[at:at] = op[2]
        elif kind == "delete":
            del b[at:at + op[2]]
        elif kind == "dup":
            chunk = bytes(b[at:at + op[2]])
            dst = int(op[3] * n) % n
            b[dst:dst] = chunk
        elif kind == "cut":
            del b[int(op[1] * len(b)):]
        elif kind == "splice":
            other = seed_bytes(op[2])
            src = int(op[3] * len(other))
            b[at:at + op[4]] = other[src:src + op[4]]
    return bytes(b)


FFMPEG_ERRORS = [  # (seed, mutations, where the FFmpeg error escapes)
    ("vp9.webm", [("flip", 0.0, 1)], "avcodec_send_packet EPERM in pyav._Frames._iter"),
    ("vp9.webm", [("delete", 0.06333657129707596, 132), ("int", 0.06042009509512188, 2147483648, 4),
                  ("insert", 0.0011405767672594891, b"\x16\tV\xfd\xb1]@O")], "send_packet EPERM"),
    ("mpeg4.ts", [("splice", 0.9824210738069146, "vp9.webm", 0.4851556207597464, 787)],
     "demux EAGAIN (BlockingIOError) in container.build_index"),
]


# Tight bounds: a mutated header that claims a huge frame or duration is refused before memory is spent on it.
LIMITS = DecodeLimits(max_bytes=1 << 20, max_width=1024, max_height=1024, max_pixels=1 << 20,
                      max_duration_s=3600, max_frames=20_000)


def known_bug(e: BaseException) -> str | None:
    if isinstance(e, av.error.FFmpegError):
        return f"FFmpeg {type(e).__name__} escapes the decoder"
    return None


def known_request_bug(kind: str, e: BaseException) -> str | None:
    if kind == "sampling" and isinstance(e, OverflowError) and "infinity" in str(e):
        return "sampling: fps/target_fps overflows to inf"
    if kind == "sampling" and isinstance(e, TypeError):
        return "sampling: num_frames/target_fps of the wrong type"
    if isinstance(e, ValueError) and "embedded null byte" in str(e):
        return "paths: NUL from a %00 escape"
    if isinstance(e, UnicodeEncodeError):
        return "paths: lone surrogate"
    if isinstance(e, ValueError) and "IPv6" in str(e):
        return "paths: unparsable URI"
    return None
