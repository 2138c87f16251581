"""The piece planner (`videoitg.decode.pieces`): a request's sampled frames cut into pieces that do not overlap, each
decoding from a place a decoder can start, every sampled frame in exactly one piece; each piece's bytes decode to the
video's own frames at the piece's frame numbers. Clip kinds: H.264 with and without B-frames, open GOPs, variable
frame rate, rotation, VP9, one long GOP, a stream without timestamps."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.clips import natural_frame, write_natural_clip
from tests.support.video import write_clip
from videoitg.decode.budget import Deadline
from videoitg.decode.container import FrameIndex, build_index, select_video_stream
from videoitg.decode.pieces import PiecePlan, Span, cut, minimum_decode, plan_pieces, plan_spans
from videoitg.decode.structs import DecodeLimits
from videoitg.sampling import SamplingParams, sample_frame_indices


def index_of(data: bytes) -> FrameIndex:
    with av.open(io.BytesIO(data)) as c:
        s = select_video_stream(c, "clip")
        return build_index(c, s, float(s.average_rate or 25), DecodeLimits(), Deadline(None), "clip")


def frames_of(data: bytes) -> list[np.ndarray]:
    """Every frame, presentation order."""
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
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("pieces")
    vfr_pts = [int(i * 40 + (i % 3) * 13) for i in range(150)]  # 25 fps, jittered: a variable rate
    paths = {
        # x264's defaults (B-frames, b-pyramid), a keyframe every 50 frames or at a scene cut
        "bframes": write_natural_clip(d / "bframes.mp4", frames=300, width=160, height=120, gop=50,
                                      options={"preset": "medium"}),
        "no_bframes": write_natural_clip(d / "nob.mp4", frames=300, width=160, height=120, gop=30,
                                         options={"bf": "0"}),
        "open_gop": open_gop_clip(d / "open.mkv"),
        "vfr": write_clip(d / "vfr.mp4", frames=150, gop=20, pts=vfr_pts, time_base=Fraction(1, 1000),
                          options={"bf": "2"}),
        "rotated": write_clip(d / "rot.mp4", frames=120, gop=25, rotation=90, marker=True),
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=120, gop=12),
        "one_gop": write_clip(d / "one.mp4", frames=120, gop=500),
    }
    return {k: p.read_bytes() for k, p in paths.items()}


MANY = SamplingParams(num_frames=40, target_fps=5.0)


def sampled(index: FrameIndex) -> list[int]:
    return sample_frame_indices(index.total, index.fps, MANY)


def decoded_positions(plan: PiecePlan, frame_numbers: list[int]) -> set[int]:
    return {p for s in plan.spans for p in range(s.start, frame_numbers[s.end - 1] + 1)}


@pytest.mark.parametrize("name", ["bframes", "no_bframes", "open_gop", "vfr", "rotated", "vp9", "one_gop"])
@pytest.mark.parametrize("pieces", [1, 3, 8])
def test_every_sampled_frame_is_decoded_once_from_a_place_a_decoder_can_start(clips: dict[str, bytes], name: str,
                                                                              pieces: int) -> None:
    data = clips[name]
    index, full = index_of(data), frames_of(data)
    numbers = sampled(index)
    plans = plan_pieces(index, numbers, max_frames=1000, pieces=pieces)
    # every sampled frame in exactly one piece, in order
    assert [j for p in plans for s in p.spans for j in range(s.first, s.end)] == list(range(len(numbers)))
    assert len(plans) <= pieces + 1
    # no frame is decoded by two pieces; what they decode together is the minimum for those samples
    seen: set[int] = set()
    for p in plans:
        mine = decoded_positions(p, numbers)
        assert not mine & seen, name
        seen |= mine
    assert sum(p.decoded(numbers) for p in plans) == minimum_decode(index, numbers)
    for p in plans:
        for s in p.spans:  # each span starts at the stream's start or at a keyframe no leading frame follows
            assert s.start == 0 or (index.pts[s.start] in index.key_pts and index.pts[s.start] not in index.open_keys)
        got = cut(data, index, p, numbers)
        frames = frames_of(got.data)
        assert got.count == 0 or got.count == len(frames)
        for j, local in zip(range(p.first, p.end), got.frames, strict=True):
            assert np.array_equal(frames[local], full[numbers[j]]), (name, p.number, numbers[j])


def test_an_open_gops_keyframe_is_not_a_start(clips: dict[str, bytes]) -> None:
    data = clips["open_gop"]
    index = index_of(data)
    with av.open(io.BytesIO(data)) as c:
        packets = [p.pts for p in c.demux(video=0) if p.size]
    assert any(b < a for a, b in zip(packets, packets[1:], strict=False))  # leading frames: an open GOP indeed
    assert set(index.key_pts[1:]) <= index.open_keys and index.pts[0] not in index.open_keys
    assert {s.start for s in plan_spans(index, sampled(index))} == {0}  # nowhere else to start
    closed = index_of(clips["bframes"])
    assert not closed.open_keys and len({s.start for s in plan_spans(closed, sampled(closed))}) > 3


def test_a_piece_over_the_frame_bound_starts_again_at_its_keyframe(clips: dict[str, bytes]) -> None:
    """The one overlap: a span of more sampled frames than a decoder's run may hold (DALI's working set) is decoded
    in parts, each from the span's start; the plan counts it."""
    data = clips["one_gop"]
    index, full = index_of(data), frames_of(data)
    numbers = sampled(index)
    plans = plan_pieces(index, numbers, max_frames=7, pieces=2)
    assert all(p.end - p.first <= 7 for p in plans) and len(plans) == -(-len(numbers) // 7)
    assert {s.start for p in plans for s in p.spans} == {0}
    assert sum(p.decoded(numbers) for p in plans) > minimum_decode(index, numbers)
    for p in plans:
        got = cut(data, index, p, numbers)
        frames = frames_of(got.data)
        assert all(np.array_equal(frames[loc], full[numbers[j]]) for j, loc in zip(range(p.first, p.end),
                                                                                   got.frames, strict=True))


def test_pieces_are_of_about_equal_decode_cost(clips: dict[str, bytes]) -> None:
    index = index_of(clips["no_bframes"])
    numbers = sample_frame_indices(index.total, index.fps, SamplingParams(num_frames=300, target_fps=25))
    costs = [p.decoded(numbers) for p in plan_pieces(index, numbers, max_frames=1000, pieces=5)]
    assert len(costs) == 5 and max(costs) <= 2 * min(costs), costs  # 10 GOPs of 30 frames in 5 pieces


def test_a_piece_names_its_frames() -> None:
    plan = PiecePlan(2, (Span(100, 4, 7),))
    assert plan.describe([0, 10, 20, 30, 120, 150, 180], 9) == \
        "piece 3 of 9 (sampled frames 120-180, decoded from frame 100)"


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
    numbers = [5, 20, 40, 50]
    plans = plan_pieces(index, numbers, max_frames=100, pieces=3)
    assert [s.start for p in plans for s in p.spans] == [0]
    got = cut(data, index, plans[0], numbers)
    assert got.data == data and got.frames == numbers
