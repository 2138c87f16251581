"""The moment rule (videoitg/moments.py) on hand-computed cases, and its place in every output."""

from __future__ import annotations

import numpy as np
import pytest

from videoitg.contract.tensors import result_from_outputs, result_outputs
from videoitg.errors import InputError
from videoitg.moments import Moment, MomentParams, find_moments, frame_spans, temporal_iou
from videoitg.outputs import GroundingResult
from videoitg.request.options import RequestOptions

TS = [float(i) for i in range(10)]  # 1 fps: frame i covers [i, i + 1)


def test_frame_spans_and_iou() -> None:
    assert frame_spans([0.0, 2.0, 4.0]) == [(0.0, 2.0), (2.0, 4.0), (4.0, 6.0)]
    assert frame_spans([0.0, 2.0, 4.0], duration=5.0) == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.0)]
    assert frame_spans([3.0]) == [(3.0, 4.0)]
    assert temporal_iou((1.0, 4.0), (2.0, 6.0)) == pytest.approx(2 / 5)
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0


def test_one_level_two_events_best_first() -> None:
    # lo 0, hi 1 -> level 0.5: runs [2..3] (mean 0.85) and [7..7] (1.0)
    s = [0.0, 0.1, 0.8, 0.9, 0.2, 0.0, 0.1, 1.0, 0.3, 0.0]
    got = find_moments(s, TS, MomentParams(thresholds=(0.5,), min_gap_s=0.0))
    assert got == [Moment(7.0, 8.0, 1.0), Moment(2.0, 4.0, pytest.approx(0.85))]


def test_threshold_is_relative_to_the_videos_range() -> None:
    # Scores squeezed into 0.95..0.99 are cut like the same curve spread over 0..1.
    s = [0.0, 0.1, 0.8, 0.9, 0.2, 0.0, 0.1, 1.0, 0.3, 0.0]
    squeezed = [0.95 + 0.04 * x for x in s]
    p = MomentParams(thresholds=(0.5,), min_gap_s=0.0)
    assert [m[:2] for m in find_moments(squeezed, TS, p)] == [m[:2] for m in find_moments(s, TS, p)]


def test_min_gap_merges_runs_split_by_a_short_dip() -> None:
    s = [0.0, 0.9, 0.9, 0.2, 0.9, 0.9, 0.0, 0.0, 0.0, 0.0]
    apart = find_moments(s, TS, MomentParams(thresholds=(0.5,), min_gap_s=0.0))
    assert [m[:2] for m in apart] == [(1.0, 3.0), (4.0, 6.0)]
    merged = find_moments(s, TS, MomentParams(thresholds=(0.5,), min_gap_s=1.0))  # the dip is one 1-s frame
    assert merged == [Moment(1.0, 6.0, pytest.approx((0.9 * 4 + 0.2) / 5))]


def test_levels_and_nms() -> None:
    # One peak: level 0.3 (>= 0.3) gives [1..5], level 0.7 gives [2..4]. IoU 3/5 = 0.6.
    s = [0.0, 0.4, 0.8, 1.0, 0.8, 0.4, 0.0, 0.0, 0.0, 0.0]
    wide, tight = Moment(1.0, 6.0, pytest.approx(3.4 / 5)), Moment(2.0, 5.0, pytest.approx(2.6 / 3))
    assert find_moments(s, TS, MomentParams(thresholds=(0.3, 0.7), nms_iou=0.7, min_gap_s=0)) == [tight, wide]
    # IoU 0.6 > 0.5: the wide one is suppressed by the better tight one.
    assert find_moments(s, TS, MomentParams(thresholds=(0.3, 0.7), nms_iou=0.5, min_gap_s=0)) == [tight]


def test_max_moments_flat_and_empty() -> None:
    s = [1.0, 0.0] * 5
    assert len(find_moments(s, TS, MomentParams(thresholds=(0.5,), min_gap_s=0, max_moments=3))) == 3
    assert find_moments([0.5] * 4, TS[:4]) == [Moment(0.0, 4.0, 0.5)]  # flat: the whole video
    assert find_moments([], []) == []
    with pytest.raises(ValueError):
        find_moments([0.1], [0.0, 1.0])


def test_params_are_checked_and_round_trip_as_strings() -> None:
    for bad in ({"thresholds": ()}, {"thresholds": (1.0,)}, {"min_gap_s": -1}, {"nms_iou": 2}, {"max_moments": 0}):
        with pytest.raises(InputError):
            MomentParams(**bad)
    p = MomentParams(thresholds=(0.2, 0.6), min_gap_s=2.5, nms_iou=0.4, max_moments=3)
    assert MomentParams.from_mapping(p.to_parameters()) == p
    assert MomentParams.from_mapping({}) == MomentParams()
    with pytest.raises(InputError, match="moment parameter"):
        MomentParams.from_mapping({"moment_max": "many"})


def test_result_and_record_carry_the_moments() -> None:
    logits = [-4.0, -4.0, 3.0, 4.0, -4.0, -4.0]
    r = GroundingResult(logits, [0, 30, 60, 90, 120, 150], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "q", "v.mp4")
    assert [m[:2] for m in r.moments][0] == (2.0, 4.0)
    rec = r.to_record(doc_id=3)
    assert rec["moments"] == [m.round() for m in r.moments]
    assert all(len(m) == 3 for m in rec["moments"])


# A 150-s clip at 29.97 fps sampled at 1 fps: frames at 0, 1.001, ..., 149.149 s (frame 4470 of 4495).
NTSC_TS = [round(i * 1001 / 1000, 3) for i in range(150)]


def test_frame_spans_stay_inside_the_duration() -> None:
    assert frame_spans(NTSC_TS)[-1] == pytest.approx((149.149, 150.15))  # one 1.001-s gap past the last frame
    assert frame_spans(NTSC_TS, duration=150.0)[-1] == (149.149, 150.0)
    # A frame stamped at or past the stated end covers nothing; a duration of 0 (not stated) bounds nothing.
    assert frame_spans([0.0, 1.0, 2.0], duration=1.5) == [(0.0, 1.0), (1.0, 1.5), (1.5, 1.5)]
    assert frame_spans([0.0, 1.0], duration=0.0) == [(0.0, 1.0), (1.0, 2.0)]


def test_end_of_video_moment_ends_by_the_duration_in_every_writer() -> None:

    logits = [-6.0] * 132 + [6.0] * 18  # relevant from frame 132 (132.132 s) to the end
    frames = [round(t * 30000 / 1001) for t in NTSC_TS]
    unbounded = GroundingResult(logits, frames, NTSC_TS, "q", "v.mp4")
    assert unbounded.moments[0][:2] == pytest.approx((132.132, 150.15))  # without the duration: past the end
    r = GroundingResult(logits, frames, NTSC_TS, "q", "v.mp4", duration=150.0)
    assert r.moments[0][:2] == pytest.approx((132.132, 150.0))
    rec = r.to_record(doc_id=0)
    assert rec["moments"][0][:2] == [132.132, 150.0] and rec["duration"] == 150.0
    assert all(0.0 <= m[0] <= m[1] <= 150.0 for m in rec["moments"])
    out = result_outputs(r, RequestOptions(top_k=4))
    assert float(out["DURATION"][0]) == 150.0
    assert float(out["MOMENTS"][:, 1].max()) <= 150.0
    back = result_from_outputs({k: v[None] for k, v in out.items()})  # as the client reads them (batch axis)
    assert back.duration == 150.0 and back.moments == r.moments
    # Unknown duration travels as 0 and reads back as None.
    assert result_from_outputs(result_outputs(unbounded, RequestOptions(top_k=4))).duration is None
    assert np.isclose(float(result_outputs(unbounded, RequestOptions(top_k=4))["MOMENTS"][0, 1]), 150.15, atol=1e-4)
