"""Pieces of a stream for a decoder that cannot seek: a piece decodes to the video's own frames, renumbered by its
first frame, on H.264 with B-frames (closed GOPs: cut at each keyframe) and with an open GOP's leading frames (not
cut there: the whole video)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.clips import natural_frame, write_natural_clip
from videoitg.decode.budget import Deadline
from videoitg.decode.container import FrameIndex, build_index, select_video_stream
from videoitg.decode.pieces import piece
from videoitg.decode.structs import DecodeLimits

SPANS = [(0, 10), (51, 99), (60, 75), (99, 101), (100, 100), (149, 160), (250, 299)]


def index_of(data: bytes) -> FrameIndex:
    with av.open(io.BytesIO(data)) as c:
        return build_index(c, select_video_stream(c, "clip"), 25.0, DecodeLimits(), Deadline(None), "clip")


def frames_of(data: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(data)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def open_gop_clip(path: Path) -> Path:
    """H.264 in Matroska with open GOPs: after each keyframe but the first, B-frames shown before it."""
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=25, options={
            "x264-params": "open-gop=1:keyint=50:min-keyint=50:scenecut=0:bframes=3:b-adapt=0"})
        s.width, s.height, s.pix_fmt = 160, 120, "yuv420p"
        cache = [natural_frame(i, 160, 120) for i in range(50)]
        for i in range(300):
            out.mux(s.encode(av.VideoFrame.from_ndarray(cache[i % 50], format="rgb24")))
        out.mux(s.encode())
    return path


@pytest.fixture(scope="module")
def bframes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """x264's defaults (B-frames, b-pyramid), a keyframe every 50 frames or at a scene cut."""
    path = tmp_path_factory.mktemp("pieces") / "bframes.mp4"
    write_natural_clip(path, frames=300, width=160, height=120, gop=50, options={"preset": "medium"})
    return path.read_bytes()


@pytest.mark.parametrize("span", SPANS)
def test_a_piece_decodes_to_the_videos_frames_from_its_keyframe(bframes: bytes, span: tuple[int, int]) -> None:
    first, last = span
    index, full = index_of(bframes), frames_of(bframes)
    cut = piece(bframes, index, first, last)
    got = frames_of(cut.data)
    for f in range(first, last + 1):
        assert np.array_equal(got[f - cut.first], full[f]), f"frame {f}"
    key = index.keyframe_at_or_before(index.pts[first])
    assert cut.first == index.pts.index(key)  # cut at the span's keyframe (the first, 0, is the whole video)
    assert (cut.first == 0) == (cut.data == bframes)
    assert cut.first == 0 or len(got) <= last - cut.first + 4  # the span and at most a B-frame group beyond


def test_an_open_gops_keyframe_is_not_cut_at(tmp_path: Path) -> None:
    data = open_gop_clip(tmp_path / "open.mkv").read_bytes()
    index, full = index_of(data), frames_of(data)
    with av.open(io.BytesIO(data)) as c:
        packets = [p.pts for p in c.demux(video=0) if p.size]
    assert any(b < a for a, b in zip(packets, packets[1:], strict=False))  # leading frames: an open GOP indeed
    for first, last in [(60, 75), (250, 299)]:
        cut = piece(data, index, first, last)
        assert cut.first == 0 and cut.data == data
        got = frames_of(cut.data)
        assert all(np.array_equal(got[f], full[f]) for f in range(first, last + 1))


def test_a_stream_without_timestamps_is_decoded_whole(tmp_path: Path) -> None:
    mp4 = tmp_path / "clip.mp4"
    write_natural_clip(mp4, frames=60, width=64, height=48, gop=10)
    raw = tmp_path / "clip.h264"
    with av.open(str(mp4)) as src, av.open(str(raw), "w", format="h264") as dst:
        copy = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(video=0):
            if p.size:
                p.stream = copy
                dst.mux(p)
    data = raw.read_bytes()
    index = index_of(data)
    assert index.ordinal
    assert piece(data, index, 40, 50).data == data
