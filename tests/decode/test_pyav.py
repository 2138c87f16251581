"""Decode layer, PyAV path: the right frames, their numbers and timestamps, seek vs full decode, rotation,
variable frame rate, probe fallbacks, SigLIP preprocessing parity, time budget, bounded memory."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tests.support.video import read_number, write_clip
from videoitg.decode import DecodeTimeoutError, decode_video, probe_video, pyav
from videoitg.launch.procfs import memory
from videoitg.preprocess import preprocess_frames
from videoitg.sampling import SamplingParams, frame_timestamps, sample_frame_indices

S = 32  # small output size keeps the suite fast; the 384 rule is checked in the SigLIP parity test
FEW = SamplingParams(num_frames=8, target_fps=5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    tb = Fraction(1, 1000)
    return {
        "h264": write_clip(d / "h264.mp4", frames=60, gop=12),
        "h264_bframes": write_clip(d / "bf.mp4", frames=60, gop=15, options={"preset": "fast", "bf": "3"}),
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=60, gop=12),
        "mjpeg": write_clip(d / "mjpeg.mkv", codec="mjpeg", frames=60),
        "long_gop": write_clip(d / "seek.mp4", frames=250, gop=10),
        "rot90": write_clip(d / "rot.mp4", frames=3, rotation=90, marker=True, width=96, height=64),
        "vfr": write_clip(d / "vfr.mkv", frames=10, pts=[0, 40, 80, 120, 500, 1000, 1500, 2000, 2040, 2080],
                          time_base=tb),
        "with_audio": write_clip(d / "av.mp4", frames=25, audio=True),
    }


def numbers(pixel_values: torch.Tensor) -> list[int]:
    return [read_number(x) for x in pixel_values.numpy()]


def full_decode_reference(path: Path, image_size: int) -> torch.Tensor:
    """Every frame, decoded front to back with no seeking, through the same SigLIP rule."""
    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return preprocess_frames(frames, image_size)


@pytest.mark.parametrize("name", ["h264", "h264_bframes", "vp9", "mjpeg", "with_audio"])
def test_sampled_frames_are_the_numbered_frames(clips: dict[str, Path], name: str) -> None:
    out = decode_video(clips[name], image_size=S, params=FEW, decoder="pyav")
    info = probe_video(clips[name], count_frames=True)
    assert out.decoder == "pyav"
    assert out.pixel_values.shape == (len(out.frame_indices), 3, S, S)
    assert out.pixel_values.dtype == torch.float32
    assert -1.0 <= out.pixel_values.min() and out.pixel_values.max() <= 1.0
    assert out.total_frames == info.total_frames
    assert out.frame_indices == sample_frame_indices(out.total_frames, out.fps, FEW)
    assert numbers(out.pixel_values) == out.frame_indices  # each frame carries its own number
    assert out.timestamps == pytest.approx(frame_timestamps(out.frame_indices, out.fps), abs=1e-6)


def test_seeking_decode_equals_full_decode(clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    # 250 frames, keyframe every 10: samples 2 s apart skip most GOPs by seeking.
    seeks: list[int | None] = []
    decoded: list[int] = []
    start, it = pyav._Frames.start, pyav._Frames._iter

    def counting_iter(self: pyav._Frames) -> Iterator[av.VideoFrame]:
        for f in it(self):
            decoded.append(f.pts)
            yield f

    monkeypatch.setattr(pyav._Frames, "start", lambda self, p: (seeks.append(p), start(self, p))[1])
    monkeypatch.setattr(pyav._Frames, "_iter", counting_iter)
    params = SamplingParams(num_frames=6, target_fps=0.5)
    out = decode_video(clips["long_gop"], image_size=S, params=params, decoder="pyav")
    assert out.frame_indices == [0, 50, 100, 150, 200]
    assert len([p for p in seeks if p is not None]) == 4  # one seek per sampled GOP after the first
    assert len(decoded) < 250 / 2  # most frames never decoded
    ref = full_decode_reference(clips["long_gop"], S)[out.frame_indices]
    assert torch.equal(out.pixel_values, ref)  # bit-identical: seeking lands on the same decoded pixels
    assert numbers(out.pixel_values) == out.frame_indices


@pytest.mark.parametrize("name", ["h264_bframes", "vp9"])
def test_sampled_decode_is_bit_identical_to_full_decode(clips: dict[str, Path], name: str) -> None:
    """B-frames (reordered, partly skipped as unsampled non-references) and VP9 altrefs: same pixels."""
    out = decode_video(clips[name], image_size=S, params=SamplingParams(num_frames=9, target_fps=4),
                       decoder="pyav")
    assert torch.equal(out.pixel_values, full_decode_reference(clips[name], S)[out.frame_indices])


def test_bytes_and_path_give_the_same_frames(clips: dict[str, Path]) -> None:
    a = decode_video(clips["vp9"], image_size=S, params=FEW, decoder="pyav")
    b = decode_video(clips["vp9"].read_bytes(), image_size=S, params=FEW, decoder="pyav")
    assert a.frame_indices == b.frame_indices and torch.equal(a.pixel_values, b.pixel_values)


def test_variable_frame_rate_uses_real_timestamps(clips: dict[str, Path]) -> None:
    info = probe_video(clips["vfr"])  # Matroska has no frame count: the packet index supplies it
    assert info.total_frames == 10 and info.frame_count_source == "index" and info.variable_frame_rate
    assert info.fps == pytest.approx(9 / 2.08)
    out = decode_video(clips["vfr"], image_size=S, params=SamplingParams(num_frames=10, target_fps=10),
                       decoder="pyav")
    assert out.frame_indices == list(range(10))
    assert numbers(out.pixel_values) == list(range(10))
    assert out.timestamps == pytest.approx([0, 0.04, 0.08, 0.12, 0.5, 1.0, 1.5, 2.0, 2.04, 2.08])


def test_rotation_metadata_turns_frames_upright(clips: dict[str, Path]) -> None:
    info = probe_video(clips["rot90"])
    assert info.rotation == 90 and (info.width, info.height) == (96, 64)
    out = decode_video(clips["rot90"], image_size=S, decoder="pyav")
    red = out.pixel_values[0, 0] - out.pixel_values[0, 2]  # the marker is red, top-left before rotation
    h = S // 2
    quadrants = {"tl": red[:h, :h].mean(), "tr": red[:h, h:].mean(), "bl": red[h:, :h].mean(),
                 "br": red[h:, h:].mean()}
    # 90 degrees counter-clockwise (display-matrix convention): top-left goes to bottom-left.
    assert max(quadrants, key=quadrants.get) == "bl"


def test_probe_reads_the_header_and_falls_back_to_counting(clips: dict[str, Path]) -> None:
    mp4 = probe_video(clips["h264"], count_frames=False)
    assert (mp4.total_frames, mp4.fps, mp4.codec, mp4.frame_count_source) == (60, 25.0, "h264", "container")
    webm = probe_video(clips["vp9"], count_frames=False)  # WebM header has no count: duration x fps
    assert webm.frame_count_source == "estimate" and webm.total_frames == 60
    assert probe_video(clips["vp9"]).frame_count_source == "index"
    assert probe_video(clips["with_audio"]).has_audio


def test_preprocessing_matches_transformers_siglip_processor(clips: dict[str, Path]) -> None:
    # siglip-so400m-patch14-384 preprocessor_config.json values, built locally (no hub access).
    try:  # imported here: seconds of transformers for every worker's collection otherwise
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as SiglipProcessor
    except ImportError:  # transformers < 5 names the PIL processor SiglipImageProcessor
        from transformers import SiglipImageProcessor as SiglipProcessor

    proc = SiglipProcessor(do_resize=True, size={"height": 384, "width": 384}, resample=3, do_rescale=True,
                           rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    params = SamplingParams(num_frames=3, target_fps=1)
    out = decode_video(clips["h264"], image_size=384, params=params, decoder="pyav")
    with av.open(str(clips["h264"])) as c:
        raw = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    ref = proc(images=[raw[i] for i in out.frame_indices], return_tensors="pt")["pixel_values"]
    assert (out.pixel_values - ref).abs().max().item() <= 1e-6  # stated tolerance: exact up to float rounding


def test_time_budget_stops_a_slow_decode(clips: dict[str, Path]) -> None:
    with pytest.raises(DecodeTimeoutError, match="time budget"):
        decode_video(clips["long_gop"], image_size=S, params=SamplingParams(num_frames=250, target_fps=25),
                     decoder="pyav", time_budget_s=0.001)


def test_stalled_input_times_out_instead_of_hanging(tmp_path: Path, clips: dict[str, Path]) -> None:
    """A FIFO that delivers the first bytes of a video and then stalls: the demuxer blocks in read()."""
    fifo = tmp_path / "stall.mp4"
    os.mkfifo(fifo)
    head = clips["vp9"].read_bytes()[:200]
    release = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as w:
            w.write(head)
            w.flush()
            release.wait(30)  # keep the pipe open without writing: the reader stalls

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(DecodeTimeoutError):
        decode_video(fifo, image_size=S, decoder="pyav", time_budget_s=1.0)
    assert time.monotonic() - t0 < 3.0
    release.set()  # lets the abandoned worker see EOF and exit
    t.join(5)


def _peak_rss_reset() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (peak RSS) for this process
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float:
    return memory()["VmHWM"] / 2**20


def test_memory_stays_bounded_by_the_output(tmp_path: Path) -> None:
    """120 sampled 1280x720 frames would be 330 MB as RGB; resizing as they are decoded keeps the peak near
    the [T,3,S,S] output plus a few full frames."""
    clip = write_clip(tmp_path / "hd.mp4", frames=120, width=1280, height=720, gop=30)
    if not _peak_rss_reset():
        pytest.skip("cannot reset peak RSS (/proc/self/clear_refs not writable)")
    base = _peak_rss_mb()
    params = SamplingParams(num_frames=120, target_fps=25)
    out = decode_video(clip, image_size=S, params=params, decoder="pyav")
    assert len(out.frame_indices) == 120
    grown = _peak_rss_mb() - base
    assert grown < 120, f"peak RSS grew by {grown:.0f} MB"


def test_frames_are_decoded_once_and_in_order(clips: dict[str, Path]) -> None:
    out = decode_video(clips["h264"], image_size=S, params=SamplingParams(num_frames=60, target_fps=25),
                       decoder="pyav")
    assert out.frame_indices == list(range(60))
    np.testing.assert_array_equal(numbers(out.pixel_values), np.arange(60))
