"""MR-mAP (QVHighlights' moment-retrieval mAP over IoU 0.5:0.05:0.95, and by window length) against values worked
out by hand from its definition (docs/evaluation.md, "Moment retrieval")."""

from __future__ import annotations

import pytest

from videoitg.eval.metrics import detection_ap, moment_map
from videoitg.eval.summary import RecordScores, evaluate_record, format_table, summarize
from videoitg.moments import MomentParams


def test_tied_scores_keep_their_order() -> None:
    gt = [(0.0, 10.0)]
    exact, loose = (0.0, 10.0, 0.9), (0.0, 20.0, 0.9)  # IoU 1 and exactly 0.5, the same score
    # exact first: it takes the window at every threshold (AP 1); loose, the second, is a false positive.
    assert moment_map([exact, loose], gt)["MR-mAP"] == pytest.approx(1.0)
    # loose first: at 0.5 it takes the window (IoU 0.5 >= 0.5: AP 1); above, it misses and exact, second, hits:
    # precision 1/2 at the one recall step (AP 1/2). MR-mAP = (1 + 9 * 0.5) / 10.
    m = moment_map([loose, exact], gt)
    assert (m["MR-mAP@0.5"], m["MR-mAP@0.75"], m["MR-mAP@0.95"]) == pytest.approx((1.0, 0.5, 0.5))
    assert m["MR-mAP"] == pytest.approx(0.55)
    # Sorted by score before matching: a later, better-scored prediction goes first.
    assert moment_map([loose, (0.0, 10.0, 0.95)], gt)["MR-mAP"] == pytest.approx(1.0)


def test_several_windows_greedy_matching_and_length_buckets() -> None:
    gt = [(0.0, 4.0), (118.0, 150.0)]  # 4 s (short) and 32 s (long); the second ends at the video's end
    pred = [(120.0, 150.0, 0.8),  # IoU 30/32 = 0.9375 with the long window
            (0.0, 5.0, 0.6),  # IoU 4/5 = 0.8 with the short one
            (60.0, 70.0, 0.4)]  # no overlap
    m = moment_map(pred, gt)
    # t <= 0.8 (7 thresholds): hits at ranks 1, 2 -> AP (1 + 1) / 2 = 1. t 0.85, 0.9: rank 1 only -> 1/2.
    # t 0.95: none -> 0. MR-mAP = (7 + 2 * 0.5) / 10.
    assert m["MR-mAP"] == pytest.approx(0.8)
    assert (m["MR-mAP@0.5"], m["MR-mAP@0.75"], m["MR-mAP@0.9"], m["MR-mAP@0.95"]) == pytest.approx(
        (1.0, 1.0, 0.5, 0.0))
    # short, against [0, 4] alone: the hit is at rank 2 (precision 1/2) for t <= 0.8 -> 7 * 0.5 / 10.
    assert m["MR-short-mAP"] == pytest.approx(0.35)
    # long, against [118, 150] alone: rank 1 for t <= 0.9 -> 9 / 10.
    assert m["MR-long-mAP"] == pytest.approx(0.9)
    assert "MR-middle-mAP" not in m  # no window of 10-30 s: the query is not in that bucket
    # Bucket bounds are (lo, hi]: 10 s is short, 30 s middle.
    assert set(moment_map(pred, [(0.0, 10.0), (100.0, 130.0)])) >= {"MR-short-mAP", "MR-middle-mAP"}
    # One window, two predictions on it: the second is a false positive, recall counts the window once.
    assert detection_ap([(0, 4, 0.9), (0, 4, 0.8)], [(0.0, 4.0)], 0.5) == pytest.approx(1.0)
    assert detection_ap([(50, 60, 0.9), (0, 4, 0.8)], gt, 0.5) == pytest.approx(0.5 * 0.5)
    assert detection_ap([], gt, 0.5) == 0.0


def test_only_the_first_ten_moments_count() -> None:
    gt = [(0.0, 2.0)]
    misses = [(10.0 + i, 11.0 + i, 0.9) for i in range(10)]
    assert moment_map([*misses, (0.0, 2.0, 0.1)], gt)["MR-mAP"] == 0.0  # the eleventh is not counted
    assert moment_map([*misses[:9], (0.0, 2.0, 0.1)], gt)["MR-mAP"] == pytest.approx(0.1)  # rank 10: 1/10


# A 150-s clip at 29.97 fps sampled at 1 fps: the last frame is at 149.149 s, one frame gap past it is 150.15 s.
NTSC_TS = [round(i * 1001 / 1000, 3) for i in range(150)]


def test_a_moment_at_the_videos_end_is_evaluated_inside_the_video() -> None:
    scores = [0.1] * 146 + [0.9] * 4  # frames 146.146 .. 149.149 s
    p = MomentParams(thresholds=(0.5,), min_gap_s=0.0)
    r = RecordScores(scores, [146, 147, 148, 149], NTSC_TS, moments=[(146.0, 150.0)], duration=150.0)
    m, row = evaluate_record(r, ks=(4,), params=p)
    assert row["moments"] == [[146.146, 150.0, 0.9]]
    # IoU 3.854 / 4 = 0.9635 >= 0.95: a hit at every threshold.
    assert (m["MR-mAP"], m["MR-short-mAP"]) == pytest.approx((1.0, 1.0))
    # Past the end ([146.146, 150.15]): IoU 3.854 / 4.15 = 0.9287, missed at 0.95 only.
    m2, _ = evaluate_record(RecordScores(scores, [146, 147, 148, 149], NTSC_TS, moments=[(146.0, 150.0)]),
                               ks=(4,), params=p)
    assert (m2["MR-mAP"], m2["MR-mAP@0.95"]) == pytest.approx((0.9, 0.0))


def test_summary_averages_a_bucket_over_its_queries() -> None:
    ts = [float(i) for i in range(40)]
    short = RecordScores([0.9] * 2 + [0.1] * 38, [0, 1], ts, moments=[(0.0, 2.0)])  # a hit at every t
    long_ = RecordScores([0.1] * 40, [0], ts, moments=[(0.0, 35.0)])  # flat: [0, 40], IoU 35/40 = 0.875
    s = summarize([short, long_], ks=(2,), params=MomentParams(thresholds=(0.5,), min_gap_s=0.0))
    row = s.rows["all"]
    assert row["MR-short-mAP"] == pytest.approx(1.0) and s.support["all"]["MR-short-mAP"] == 1
    # long: hits for t <= 0.85 (8 thresholds) -> 0.8; all: (1 + 0.8) / 2.
    assert row["MR-long-mAP"] == pytest.approx(0.8) and s.support["all"]["MR-long-mAP"] == 1
    assert row["MR-mAP"] == pytest.approx(0.9) and "MR-mAP" not in s.support["all"]
    assert "MR-middle-mAP" not in row
    table = format_table(s, ks=(2,))
    assert "MR-short-mAP" in table and "1.000 (n=1)" in table and "0.800 (n=1)" in table
