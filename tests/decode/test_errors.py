"""Bad input: each case gets a small generated fixture and must raise its own typed `VideoDecodeError`
subclass (never a crash, never a hang; every call here runs under a time budget)."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from tests.support.video import truncate, unknown_codec, write_audio_only, write_clip, write_empty_stream
from videoitg.decode import (
    DecodeLimits,
    DecoderUnavailableError,
    EmptyVideoError,
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoNotFoundError,
    VideoTooLargeError,
    dali_available,
    decode_video,
)
from videoitg.errors import VideoDecodeError

BUDGET = 10.0


def decode(src: object, **kw: object):
    kw.setdefault("decoder", "pyav")
    return decode_video(src, image_size=16, time_budget_s=BUDGET, **kw)


@pytest.fixture(scope="module")
def d(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad")


@pytest.fixture(scope="module")
def mp4(d: Path) -> Path:
    return write_clip(d / "ok.mp4", frames=40)


def test_empty_bytes_and_empty_file(d: Path) -> None:
    with pytest.raises(EmptyVideoError, match="empty"):
        decode(b"")
    (d / "empty.mp4").write_bytes(b"")
    with pytest.raises(EmptyVideoError, match="empty"):
        decode(d / "empty.mp4")


def test_missing_path_and_directory(d: Path) -> None:
    with pytest.raises(VideoNotFoundError, match="not found"):
        decode(d / "missing.mp4")
    with pytest.raises(VideoNotFoundError, match="directory"):
        decode(d)


def test_random_bytes_and_text_are_not_video(d: Path) -> None:
    # Fixed bytes: about 1 in 300 random 4 KiB strings probe as a container holding a subtitle stream
    # (NoVideoStreamError, as clear an error, but not this one).
    with pytest.raises(NotAVideoError, match="not a recognisable video"):
        decode(random.Random(0).randbytes(4096))
    (d / "notes.mp4").write_text("not a video\n" * 50)
    with pytest.raises(NotAVideoError):
        decode(d / "notes.mp4")


def test_truncated_mp4_index_at_end(d: Path, mp4: Path) -> None:
    # PyAV writes the moov index last: cutting the file removes it.
    with pytest.raises(TruncatedVideoError, match="MP4"):
        decode(truncate(mp4, d / "cut.mp4", 0.6))


def test_truncated_mp4_faststart(d: Path) -> None:
    full = write_clip(d / "fs.mp4", frames=40, faststart=True)
    with pytest.raises(TruncatedVideoError, match="truncated"):
        decode(truncate(full, d / "fs_cut.mp4", 0.6))


def test_truncated_webm(d: Path) -> None:
    full = write_clip(d / "t.webm", codec="libvpx-vp9", frames=40)
    with pytest.raises(TruncatedVideoError, match="truncated"):
        decode(truncate(full, d / "t_cut.webm", 0.6))
    with pytest.raises(TruncatedVideoError):  # cut inside the header
        decode(truncate(full, d / "t_head.webm", 0.05))


def test_audio_only_file(d: Path) -> None:
    with pytest.raises(NoVideoStreamError, match="no video stream .*audio"):
        decode(write_audio_only(d / "a.m4a"))


def test_zero_frame_video(d: Path) -> None:
    with pytest.raises(NoFramesError, match="no frames"):
        decode(write_empty_stream(d / "zero.avi"))


def test_one_frame_video_decodes(d: Path) -> None:
    one_webm = write_clip(d / "one.webm", codec="libvpx-vp9", frames=1)
    for path in (write_clip(d / "one.mp4", frames=1), one_webm):
        out = decode(path)
        assert out.frame_indices == [0] and out.total_frames == 1 and out.pixel_values.shape == (1, 3, 16, 16)


def test_very_large_frames(d: Path) -> None:
    big = write_clip(d / "8k.mp4", frames=1, width=7680, height=4320)
    with pytest.raises(VideoTooLargeError, match="7680x4320"):
        decode(big)  # refused from the header, before any frame is decoded


def test_very_long_duration(d: Path) -> None:
    # Three frames five hours apart: tiny file, 5 h timeline.
    long = write_clip(d / "long.mkv", frames=3, pts=[0, 9_000_000, 18_000_000], time_base=Fraction(1, 1000))
    with pytest.raises(VideoTooLargeError, match="duration"):
        decode(long)
    out = decode(long, limits=DecodeLimits(max_duration_s=8 * 3600))  # a raised limit admits it
    assert out.timestamps == pytest.approx([0.0, 9000.0, 18000.0])


def test_byte_limit(mp4: Path) -> None:
    with pytest.raises(VideoTooLargeError, match="byte limit"):
        decode(mp4, limits=DecodeLimits(max_bytes=1000))
    with pytest.raises(VideoTooLargeError, match="byte limit"):
        decode(mp4.read_bytes(), limits=DecodeLimits(max_bytes=1000))


def test_codec_nobody_supports(d: Path) -> None:
    mjpeg = write_clip(d / "m.mkv", codec="mjpeg", frames=5)
    with pytest.raises(UnsupportedCodecError, match="codec"):
        decode(unknown_codec(mjpeg, d / "unknown.mkv"))


def test_bad_decoder_requests(mp4: Path) -> None:
    for name in ("opencv", "dali-gpu"):  # the decoder that runs is named dali-gpu; one asks for dali on a GPU
        with pytest.raises(DecoderUnavailableError, match="decoder must be one of auto, pyav, dali"):
            decode(mp4, decoder=name)
    if not torch.cuda.is_available():
        with pytest.raises(DecoderUnavailableError, match="GPU"):
            decode(mp4, decoder="dali", device="cuda")


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed")
def test_dali_cpu_refuses_h264(mp4: Path) -> None:
    with pytest.raises(UnsupportedCodecError, match="DALI's CPU decoder cannot decode h264"):
        decode(mp4, decoder="dali")


def test_every_error_is_a_video_decode_error() -> None:
    for cls in (EmptyVideoError, NotAVideoError, NoVideoStreamError, NoFramesError, UnsupportedCodecError,
                TruncatedVideoError, VideoTooLargeError, VideoNotFoundError, DecoderUnavailableError):
        assert issubclass(cls, VideoDecodeError)
