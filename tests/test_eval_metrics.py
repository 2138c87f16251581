"""Grounding metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from videoitg import evaluation as ev


def test_ranking_is_stable_on_ties() -> None:
    assert ev.ranking([0.1, 0.9, 0.5, 0.9]).tolist() == [1, 3, 2, 0]


def test_recall_precision_ap_by_hand() -> None:
    scores = [0.9, 0.1, 0.8, 0.3, 0.7, 0.2]  # order: 0, 2, 4, 3, 5, 1
    order = ev.ranking(scores)
    pos = [2, 3]
    assert ev.recall_at_k(order, pos, 2) == 0.5  # top2 = {0, 2}
    assert ev.precision_at_k(order, pos, 2) == 0.5
    assert ev.recall_at_k(order, pos, 4) == 1.0  # top4 = {0, 2, 4, 3}
    assert ev.precision_at_k(order, pos, 4) == 0.5
    # K > T: all frames selected, precision divides by T.
    assert ev.precision_at_k(order, pos, 8) == pytest.approx(2 / 6)
    # AP: positive 2 at rank 2 (1/2), positive 3 at rank 4 (2/4) -> mean 0.5.
    assert ev.average_precision(order, pos) == pytest.approx(0.5)
    assert ev.average_precision(order, [0]) == 1.0


def test_uniform_indices() -> None:
    assert ev.uniform_indices(10, 2) == [2, 7]
    assert ev.uniform_indices(10, 5) == [1, 3, 5, 7, 9]
    assert ev.uniform_indices(3, 8) == [0, 1, 2]


def test_moment_rule_and_iou() -> None:
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    scores = [0.1, 0.6, 0.95, 0.7, 0.2, 0.8]
    # Top frame 2, grows to 1..3 (0.6, 0.7 >= 0.5), frame 5 is not contiguous.
    assert ev.predicted_moment(scores, ts) == (1.0, 4.0)
    # Nothing else above the threshold: the top frame alone; the last frame ends at the duration.
    assert ev.predicted_moment([0.1, 0.2, 0.3], [0.0, 1.0, 2.0], duration=2.5) == (2.0, 2.5)
    assert ev.temporal_iou((1.0, 4.0), (2.0, 6.0)) == pytest.approx(2 / 5)
    assert ev.temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0
    assert ev.positive_moments([1, 2, 4], ts) == [(1.0, 3.0), (4.0, 5.0)]
    assert ev.positives_from_moments([[1.0, 2.5]], ts) == [1, 2]


def test_summary_by_hand() -> None:
    ts = [float(i) for i in range(6)]
    a = ev.RecordScores([0.9, 0.8, 0.1, 0.1, 0.1, 0.1], [0, 1], ts, kind="semantic")
    b = ev.RecordScores([0.9, 0.1, 0.1, 0.1, 0.1, 0.8], [4, 5], ts, kind="motion", moments=[[4.0, 6.0]])
    s = ev.summarize([a, b], ks=(2,))
    assert s.counts == {"all": 2, "semantic": 1, "motion": 1}
    assert s.rows["semantic"]["recall@#pos"] == 1.0
    assert s.rows["motion"]["recall@#pos"] == 0.5  # top2 = {0, 5}
    assert s.rows["all"]["recall@#pos"] == 0.75
    # Uniform K=2 over 6 frames picks {1, 4}: recall 0.5 for both records.
    assert s.rows["all"]["uniform_recall@2"] == 0.5
    # a: moment (0, 2) vs GT (0, 2): IoU 1. b: top frame 0 -> (0, 1) vs (4, 6): IoU 0.
    assert s.rows["all"]["mIoU"] == 0.5 and s.rows["all"]["R1@0.7"] == 0.5
    # AP of b: positive 5 at rank 2 (1/2), positive 4 at rank 6 among ties (0.1s keep order 1,2,3,4) -> 2/6.
    assert s.rows["motion"]["AP"] == pytest.approx((0.5 + 2 / 6) / 2)
    table = ev.format_table(s, ks=(2,))
    assert "uniform" in table and "semantic" in table and not math.isnan(s.rows["all"]["AP"])


def test_record_errors() -> None:
    with pytest.raises(ValueError, match="no positive"):
        ev.record_metrics(ev.RecordScores([0.1, 0.2], [], [0.0, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        ev.record_metrics(ev.RecordScores([0.1, 0.2], [2], [0.0, 1.0]))
