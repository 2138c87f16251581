"""Decoder defects found by hostile and careless inputs (docs/reliability.md, "Hardening"):

- decode work is bounded by what must be decoded, not only by wall time: a 140 KB file holding one 4K keyframe and
  3,000 skip frames (`tests/data/skip_frames_4k.mp4`) took the whole 60 s budget;
- a Matroska clip whose timestamps start at 5 h is as long as its frames, not 5 h;
- a raw `.h264` elementary stream (no container, no timestamps) decodes;
- an MP4 cut anywhere, including inside a faststart `moov`, is reported as truncated.

`skip_frames_4k.mp4` was written with PyAV: libx264, preset ultrafast, 3840x2160, 30 fps, 3,000 identical frames
(a horizontal grey ramp), `g=keyint_min=100000`, `sc_threshold=0`, `bf=0` (one keyframe, then all-skip P frames).
Encoding it takes minutes on 2 cores, hence the shipped file.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from tests.support import DATA
from tests.support.video import read_number, write_clip
from videoitg.decode import (
    DecodeLimits,
    TruncatedVideoError,
    VideoTooLargeError,
    decode_video,
    plan_decode,
    probe_video,
)
from videoitg.decode import api as decode_api
from videoitg.decode.budget import Deadline
from videoitg.decode.container import (
    build_index,
    check_decode_work,
    frames_to_decode,
    header_info,
    open_container,
)
from videoitg.sampling import SamplingParams

BUDGET = 30.0


def numbers(pixel_values) -> list[int]:
    return [read_number(x) for x in pixel_values.numpy()]


def test_skip_frame_file_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    path = DATA / "skip_frames_4k.mp4"
    info = probe_video(path)
    assert (info.width, info.height, info.total_frames) == (3840, 2160, 3000)
    monkeypatch.setattr(decode_api, "decode_frames", lambda *a, **k: pytest.fail("frames were decoded"))
    with pytest.raises(VideoTooLargeError, match="decode work limit") as e:
        decode_video(path, image_size=32, decoder="pyav", time_budget_s=BUDGET)
    assert "2971 frames of 3840x2160" in str(e.value)
    # A deployment that wants such files admits them with a looser ratio (and pays for the decode).
    with open_container(decode_api.check_source(path, DecodeLimits())) as c:
        s = c.streams.video[0]
        index = build_index(c, s, header_info(c, s)["fps"], DecodeLimits(), Deadline(None), "x")
    loose = DecodeLimits(max_decode_pixels_per_byte=1 << 18)
    assert check_decode_work(index, list(range(0, 3000, 30)), 3840, 2160, path.stat().st_size, loose, "x") > 0


def test_gpu_decode_plan_makes_the_same_checks_and_picks_the_same_frames(tmp_path: Path) -> None:
    """`plan_decode` (what the GPU server hands DALI, which has no limits of its own) refuses what `decode_video`
    refuses before decoding, the decode-work bound included, and names the frames `decode_video` decodes."""
    with pytest.raises(VideoTooLargeError, match="decode work limit"):
        plan_decode(DATA / "skip_frames_4k.mp4", time_budget_s=BUDGET)
    with pytest.raises(VideoTooLargeError, match="byte limit"):
        plan_decode(DATA / "skip_frames_4k.mp4", limits=DecodeLimits(max_bytes=1000))
    path = write_clip(tmp_path / "c.mp4", frames=90, fps=30, rotation=90)
    params = SamplingParams(num_frames=8, target_fps=2.0)
    plan = plan_decode(path.read_bytes(), params=params)
    out = decode_video(path, image_size=16, params=params, decoder="pyav")
    assert (plan.frame_indices, plan.timestamps, plan.fps) == (out.frame_indices, out.timestamps, out.fps)
    assert plan.rotation == out.info.rotation == 90 and plan.colour == probe_video(path).colour is not None


def test_frames_to_decode_follows_seeks_and_keyframes(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "gop.mp4", frames=100, gop=25, options={"bf": "0"})
    with open_container(decode_api.check_source(path, DecodeLimits())) as c:
        s = c.streams.video[0]
        index = build_index(c, s, header_info(c, s)["fps"], DecodeLimits(), Deadline(None), "x")
    assert index.key_pts == [index.pts[i] for i in (0, 25, 50, 75)]
    assert frames_to_decode(index, [0]) == 1
    assert frames_to_decode(index, [10]) == 11  # from keyframe 0
    assert frames_to_decode(index, [30, 80]) == 6 + 6  # seek to 25, then to 75
    assert frames_to_decode(index, [10, 20]) == 21  # onward from 10, no seek back
    assert frames_to_decode(index, list(range(100))) == 100


def test_decoder_counts_the_pixels_it_decodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running count stops a decode that goes past the estimate (re-seeks in a damaged file)."""
    path = write_clip(tmp_path / "long_gop.mp4", frames=60, gop=1000, width=64, height=48)
    monkeypatch.setattr(decode_api, "check_decode_work", lambda *a, **k: 20 * 64 * 48)  # room for 20 frames
    with pytest.raises(VideoTooLargeError, match="decoding stopped after"):
        decode_video(path, image_size=16, decoder="pyav", time_budget_s=BUDGET,
                     params=SamplingParams(target_fps=25.0, num_frames=60))


def test_ordinary_long_gop_clip_is_within_the_work_limit(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "ok.mp4", frames=250, gop=250, width=320, height=240)
    out = decode_video(path, image_size=16, decoder="pyav", time_budget_s=BUDGET)
    assert numbers(out.pixel_values) == out.frame_indices


def test_matroska_starting_at_5_hours_is_as_long_as_its_frames(tmp_path: Path) -> None:
    fps, offset = 25, 5 * 3600
    path = write_clip(tmp_path / "late.mkv", frames=75, fps=fps, time_base=Fraction(1, fps),
                      pts=[offset * fps + i for i in range(75)])
    info = probe_video(path)
    assert info.duration_s == pytest.approx(3.0, abs=0.1)
    out = decode_video(path, image_size=16, decoder="pyav", time_budget_s=BUDGET)  # was: "18003 s over the limit"
    assert numbers(out.pixel_values) == out.frame_indices == [0, 25, 50]
    assert out.timestamps == pytest.approx([0.0, 1.0, 2.0])


def test_raw_h264_elementary_stream_decodes(tmp_path: Path) -> None:
    path = write_clip(tmp_path / "raw.h264", frames=50, fps=10)
    data = path.read_bytes()
    assert data[:4] == b"\x00\x00\x00\x01"  # Annex B start code: no container
    for src in (path, data):
        out = decode_video(src, image_size=16, decoder="pyav", time_budget_s=BUDGET)  # was: "file is corrupt"
        assert out.fps == pytest.approx(10.0)  # the stream's own timing, not the demuxer's 25 fps guess
        assert numbers(out.pixel_values) == out.frame_indices == [0, 10, 20, 30, 40]
        assert out.timestamps == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0])


def test_cut_faststart_mp4_is_truncated_wherever_it_is_cut(tmp_path: Path) -> None:
    """Cuts inside `moov` said "no video stream", "codec is unknown" or "no frames" before."""
    path = write_clip(tmp_path / "fs.mp4", frames=60, faststart=True)
    data = path.read_bytes()
    assert data[36:40] == b"moov"
    moov_end = 32 + int.from_bytes(data[32:36], "big")
    cuts = list(range(40, moov_end, 13)) + [len(data) * k // 10 for k in range(1, 10)]
    wrong = {}
    for n in cuts:
        try:
            decode_video(data[:n], image_size=16, decoder="pyav", time_budget_s=BUDGET)
            wrong[n] = "decoded"
        except TruncatedVideoError:
            pass
        except Exception as e:  # collected and reported below
            wrong[n] = f"{type(e).__name__}: {e}"
    assert not wrong, f"{len(wrong)} of {len(cuts)} cuts not reported as truncated: {list(wrong.items())[:4]}"
