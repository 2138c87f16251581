"""Fuzzing (hypothesis) of the decoder on mutated video bytes: small valid clips in five containers/codecs,
mutated by byte flips, size-field overwrites, insertions, deletions, duplicated chunks, cuts and splices.

Property: `decode_video` / `probe_video` return well-formed frames or raise a typed `VideoITGError`; nothing
else escapes, nothing crashes the process, and every call returns within its time budget (+ slack).
VIDEOITG_FUZZ_EXAMPLES scales the run; VIDEOITG_FUZZ_REPORT=DIR writes the counts to DIR/fuzz_decode.json.
"""

from __future__ import annotations

import importlib.util
import math
import struct
import time
from collections import Counter
from pathlib import Path

import av
import av.error
import fuzz_support
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from videoitg.decode import DecodeLimits, DecodeTimeoutError, SampledFrames, dali_available, decode_video, probe_video
from videoitg.errors import VideoITGError
from videoitg.sampling import SamplingParams

BUDGET_S = 5.0
SLACK_S = 3.0  # thread start/join and a loaded CI machine
COUNTS: Counter[str] = Counter()
# Tight bounds: a mutated header that claims a huge frame or duration is refused before memory is spent on it.
LIMITS = DecodeLimits(max_bytes=1 << 20, max_width=1024, max_height=1024, max_pixels=1 << 20,
                      max_duration_s=3600, max_frames=20_000)
# (container format, codec, muxer options): every seed is bit-exact, so a failing case replays anywhere.
SEEDS = {
    "h264.mp4": ("mp4", "libx264", {}),
    "h264-faststart.mp4": ("mp4", "libx264", {"movflags": "faststart"}),
    "vp9.webm": ("webm", "libvpx-vp9", {}),
    "mjpeg.avi": ("avi", "mjpeg", {}),
    "h264.mkv": ("matroska", "libx264", {}),
    "mpeg4.ts": ("mpegts", "mpeg4", {}),
}


def fuzz(ci_examples: int):
    return fuzz_support.fuzz(ci_examples, HealthCheck.data_too_large)


@pytest.fixture(scope="module", autouse=True)
def report():  # type: ignore[no-untyped-def]
    yield
    fuzz_support.write_report("fuzz_decode", COUNTS)


_SEED_BYTES: dict[str, bytes] = {}


def seed_bytes(name: str) -> bytes:
    if name not in _SEED_BYTES:
        _SEED_BYTES[name] = encode_seed(*SEEDS[name])
    return _SEED_BYTES[name]


def encode_seed(fmt: str, codec: str, muxer_options: dict[str, str], frames: int = 12, w: int = 48, h: int = 32,
                fps: int = 6) -> bytes:
    """A 2 s clip, keyframe every 4 frames; bitexact muxing and one encoder thread make the bytes reproducible
    (Matroska otherwise writes random UIDs)."""
    import tempfile

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


# ---- mutations -----------------------------------------------------------------------------------------------
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
position = st.floats(0, 1, exclude_max=True) | st.floats(0, 0.08)  # bias toward headers (sizes, counts, codecs)
mutation = st.one_of(
    st.tuples(st.just("flip"), position, st.integers(1, 255)),
    st.tuples(st.just("int"), position, st.sampled_from(INTERESTING), st.sampled_from([1, 2, 4, 8])),
    st.tuples(st.just("insert"), position, st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), position, st.integers(1, 256)),
    st.tuples(st.just("dup"), position, st.integers(1, 512), position),
    st.tuples(st.just("cut"), st.floats(0, 1)),
    st.tuples(st.just("splice"), position, st.sampled_from(sorted(SEEDS)), position, st.integers(16, 2048)),
)


def mutate(data: bytes, ops: list[tuple]) -> bytes:  # type: ignore[type-arg]
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


# ---- the property --------------------------------------------------------------------------------------------
def check_frames(out: SampledFrames, image_size: int) -> None:
    T = len(out.frame_indices)
    assert T >= 1 and out.pixel_values.shape == (T, 3, image_size, image_size)
    assert bool(out.pixel_values.isfinite().all()) and float(out.pixel_values.abs().max()) <= 1.0 + 1e-6
    assert out.frame_indices == sorted(out.frame_indices) and 0 <= out.frame_indices[0]
    assert out.frame_indices[-1] < out.total_frames and len(out.timestamps) == T
    assert all(math.isfinite(t) for t in out.timestamps) and math.isfinite(out.fps) and out.fps > 0


# Crashes this fuzzer found in the decode package (fixed; see RELIABILITY.md D1/D2): the regression tests below
# pin them. Should one come back, it is reported as "known" so the fuzzer keeps looking for new ones.
def known_bug(e: BaseException) -> str | None:
    if isinstance(e, av.error.FFmpegError):
        return f"FFmpeg {type(e).__name__} escapes the decoder"
    return None


def run_case(kind: str, data: bytes, decoder: str = "pyav") -> None:
    COUNTS[kind] += 1
    params = SamplingParams(4, target_fps=2.0)
    t0 = time.monotonic()
    try:
        out = decode_video(data, image_size=16, params=params, decoder=decoder, time_budget_s=BUDGET_S,
                           limits=LIMITS)
        check_frames(out, 16)
        COUNTS[f"{kind}:decoded"] += 1
    except VideoITGError as e:
        COUNTS[f"{kind}:{type(e).__name__}"] += 1
    except Exception as e:
        if known_bug(e) is None:
            raise
        COUNTS[f"{kind}:known:{known_bug(e)}"] += 1
    elapsed = time.monotonic() - t0
    assert elapsed < BUDGET_S + SLACK_S, f"decode took {elapsed:.1f} s (budget {BUDGET_S} s)"
    t0 = time.monotonic()
    try:
        info = probe_video(data, limits=LIMITS, time_budget_s=BUDGET_S)
        assert info.width >= 0 and info.height >= 0 and info.total_frames >= 0
    except VideoITGError:
        pass
    except Exception as e:
        if known_bug(e) is None:
            raise
        COUNTS[f"{kind}:probe:known:{known_bug(e)}"] += 1
    assert time.monotonic() - t0 < BUDGET_S + SLACK_S


@fuzz(120)
@given(seed=st.sampled_from(sorted(SEEDS)), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_video_bytes(seed: str, ops: list[tuple]) -> None:  # type: ignore[type-arg]
    run_case("mutated", mutate(seed_bytes(seed), ops))


@fuzz(40)
@given(data=st.binary(max_size=2048), magic=st.sampled_from([b"", b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS",
                                                           b"\x00\x00\x00\x18ftypisom", b"FLV\x01", b"DKIF"]))
def test_random_bytes_behind_container_magic(data: bytes, magic: bytes) -> None:
    if not magic + data:
        data = b"\x00"
    run_case("random", magic + data)


def test_every_seed_decodes() -> None:
    # The mutation corpus starts from valid clips: if these failed, the fuzzer would only test the error paths.
    for name in SEEDS:
        out = decode_video(seed_bytes(name), image_size=16, params=SamplingParams(4, 2.0), decoder="pyav",
                           time_budget_s=BUDGET_S, limits=LIMITS)
        check_frames(out, 16)


@pytest.mark.skipif(not (dali_available() and importlib.util.find_spec("videoitg.decode.dali_backend")),
                    reason="DALI or videoitg.decode.dali_backend not installed")
@fuzz(15)
@given(ops=st.lists(mutation, min_size=1, max_size=3))
def test_mutated_vp9_through_auto_decoder(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    run_case("auto-vp9", mutate(seed_bytes("vp9.webm"), ops), decoder="auto")


# ---- the decode bugs found, pinned (deterministic seeds: these replay anywhere) --------------------------------
FFMPEG_ERRORS = [  # (seed, mutations, where the FFmpeg error escapes)
    ("vp9.webm", [("flip", 0.0, 1)], "avcodec_send_packet EPERM in pyav_backend._Frames._iter"),
    ("vp9.webm", [("delete", 0.06333657129707596, 132), ("int", 0.06042009509512188, 2147483648, 4),
                  ("insert", 0.0011405767672594891, b"\x16\tV\xfd\xb1]@O")], "send_packet EPERM"),
    ("mpeg4.ts", [("splice", 0.9824210738069146, "vp9.webm", 0.4851556207597464, 787)],
     "demux EAGAIN (BlockingIOError) in container.build_index"),
]


@pytest.mark.parametrize("seed,ops,where", FFMPEG_ERRORS, ids=[c[2].split()[0] + str(i)
                                                               for i, c in enumerate(FFMPEG_ERRORS)])
def test_known_ffmpeg_errors_escape(seed: str, ops: list[tuple], where: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(VideoITGError):  # workers=1: the serial decoder, whose code paths `where` names
        decode_video(mutate(seed_bytes(seed), ops), image_size=16, params=SamplingParams(4, 2.0), decoder="pyav",
                     time_budget_s=BUDGET_S, limits=LIMITS, workers=1)


def test_known_seek_livelock() -> None:
    # 8 bytes of the Matroska cues overwritten: a 2.4 KB, 12-frame file spins until its time budget, whatever it
    # is (each such request costs a CPU core for the whole budget: 60 s by default).
    data = mutate(seed_bytes("h264.mkv"), [("int", 0.9833442128592947, 32767, 8)])
    try:
        decode_video(data, image_size=16, params=SamplingParams(4, 2.0), decoder="pyav", time_budget_s=6,
                     limits=LIMITS)
    except VideoITGError as e:
        if isinstance(e, DecodeTimeoutError):
            raise


def test_packet_of_an_undeclared_stream_is_not_an_index_error() -> None:
    """Found by atheris in CI: a damaged container whose packets name a stream it never declared made PyAV's
    demux raise IndexError out of the decoder. Now the readable part decodes, or a typed error says why not."""
    data = (Path(__file__).parent / "data" / "atheris_unknown_stream.bin").read_bytes()[1:]  # [0]: selector byte
    try:
        out = decode_video(data, image_size=16, params=SamplingParams(4, 2.0), decoder="pyav", time_budget_s=30,
                           limits=LIMITS)
        assert out.pixel_values.shape[0] == len(out.frame_indices) > 0
    except VideoITGError:
        pass
    try:
        probe_video(data, count_frames=True)
    except VideoITGError:
        pass
