"""The moment rule (videoitg/moments.py) on hand-computed cases, and its place in every output."""

from __future__ import annotations

import pytest

from videoitg.errors import InputError
from videoitg.moments import Moment, MomentParams, find_moments, frame_spans, temporal_iou
from videoitg.outputs import GroundingResult

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
