"""Grounding metrics against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from videoitg.eval.metrics import (
    average_precision,
    best_iou,
    clip_scores,
    highlight_metrics,
    interpolated_ap,
    positive_moments,
    positives_from_moments,
    precision_at_k,
    ranking,
    recall_at_k,
    uniform_indices,
)
from videoitg.eval.summary import RecordScores, evaluate_record, format_table, record_metrics, summarize
from videoitg.moments import MomentParams, temporal_iou


def test_ranking_is_stable_on_ties() -> None:
    assert ranking([0.1, 0.9, 0.5, 0.9]).tolist() == [1, 3, 2, 0]


def test_recall_precision_ap_by_hand() -> None:
    scores = [0.9, 0.1, 0.8, 0.3, 0.7, 0.2]  # order: 0, 2, 4, 3, 5, 1
    order = ranking(scores)
    pos = [2, 3]
    assert recall_at_k(order, pos, 2) == 0.5  # top2 = {0, 2}
    assert precision_at_k(order, pos, 2) == 0.5
    assert recall_at_k(order, pos, 4) == 1.0  # top4 = {0, 2, 4, 3}
    assert precision_at_k(order, pos, 4) == 0.5
    # K > T: all frames selected, precision divides by T.
    assert precision_at_k(order, pos, 8) == pytest.approx(2 / 6)
    # AP: positive 2 at rank 2 (1/2), positive 3 at rank 4 (2/4) -> mean 0.5.
    assert average_precision(order, pos) == pytest.approx(0.5)
    assert average_precision(order, [0]) == 1.0


def test_uniform_indices() -> None:
    assert uniform_indices(10, 2) == [2, 7]
    assert uniform_indices(10, 5) == [1, 3, 5, 7, 9]
    assert uniform_indices(3, 8) == [0, 1, 2]


def test_ground_truth_helpers_and_iou() -> None:
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert temporal_iou((1.0, 4.0), (2.0, 6.0)) == pytest.approx(2 / 5)
    assert temporal_iou((0.0, 1.0), (2.0, 3.0)) == 0.0
    assert positive_moments([1, 2, 4], ts) == [(1.0, 3.0), (4.0, 5.0)]
    assert positives_from_moments([[1.0, 2.5]], ts) == [1, 2]
    # Several ground-truth windows: a prediction is matched with the one it overlaps most.
    assert best_iou((1.0, 3.0), [(0.0, 2.0), (6.0, 9.0)]) == pytest.approx(1 / 3)
    assert best_iou((6.0, 8.0), [(0.0, 2.0), (6.0, 9.0)]) == pytest.approx(2 / 3)


def test_moment_metrics_with_several_windows_by_hand() -> None:
    ts = [float(i) for i in range(10)]
    gt = [(0.0, 2.0), (6.0, 9.0)]
    # One event 1..2 (-> moment [1, 3), IoU 1/3 with [0, 2)) and a weaker one at 6..7 (-> [6, 8), IoU 2/3).
    scores = [0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.7, 0.7, 0.1, 0.1]
    r = RecordScores(scores, [0, 1, 6, 7, 8], ts, moments=gt)
    p = MomentParams(thresholds=(0.5,), min_gap_s=0.0)
    m, row = evaluate_record(r, ks=(2,), params=p)
    assert [x[:2] for x in row["moments"]] == [[1.0, 3.0], [6.0, 8.0]]
    assert row["ious"] == [pytest.approx(1 / 3, abs=1e-4), pytest.approx(2 / 3, abs=1e-4)]
    assert m["mIoU"] == pytest.approx(1 / 3)
    assert (m["R1@0.3"], m["R1@0.5"], m["R1@0.7"]) == (1.0, 0.0, 0.0)
    assert (m["R5@0.5"], m["R5@0.7"]) == (1.0, 0.0)  # the second moment reaches 2/3
    # The same scores against one window only: the second window no longer rescues R5.
    m1, _ = evaluate_record(RecordScores(scores, [0, 1], ts, moments=[(0.0, 2.0)]), ks=(2,), params=p)
    assert (m1["R5@0.5"], m1["mIoU"]) == (0.0, pytest.approx(1 / 3))


def test_interpolated_ap_by_hand() -> None:
    assert interpolated_ap([0, 1, 0], [0.3, 0.8, 0.2]) == 1.0
    assert interpolated_ap([1, 1, 1], [0.1, 0.2, 0.3]) == 1.0  # all positive
    assert interpolated_ap([0, 0, 0], [0.1, 0.2, 0.3]) == 0.0  # none
    # Ranked: pos, neg, pos -> precision 1 at recall 1/2, 2/3 at recall 1.
    assert interpolated_ap([1, 0, 1, 0], [0.9, 0.5, 0.2, 0.1]) == pytest.approx((1 + 2 / 3) / 2)
    # A tie enters together: threshold 0.5 gives 1 of 2 (p 1/2, r 1/2), then 0.2 gives p 2/3 at r 1; the
    # interpolated precision at r 1/2 is the best at any recall >= 1/2: 2/3.
    assert interpolated_ap([1, 0, 1, 0], [0.5, 0.5, 0.2, 0.1]) == pytest.approx(2 / 3)


def test_highlight_metrics_qvhighlights_by_hand() -> None:
    ts = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    scores = [0.2, 0.4, 0.9, 0.7, 0.1, 0.3]  # 2-s clips: 0.3, 0.8, 0.2
    assert clip_scores(scores, ts, 3) == pytest.approx([0.3, 0.8, 0.2])
    saliency = [[0, 0, 4], [4, 2, 4], [0, 0, 0]]  # [clip][annotator]
    # >= 4: annotator 0 [0,1,0] AP 1, annotator 1 none AP 0, annotator 2 [1,1,0] AP 1; top clip 1 is a hit.
    hl = highlight_metrics(scores, ts, [], saliency, saliency_min=4)
    assert hl == {"HL-mAP": pytest.approx(2 / 3), "HL-HIT@1": 1.0}
    assert highlight_metrics(scores, ts, [], saliency, saliency_min=2)["HL-mAP"] == pytest.approx(1.0)
    # A clip no sampled frame falls in takes the frame covering its centre.
    assert clip_scores([0.5, 0.9], [0.0, 4.0], 3) == [0.5, 0.5, 0.9]
    # Without saliency annotations: per frame, positives = inside the ground truth.
    assert highlight_metrics(scores, ts, [2, 3]) == {"HL-mAP": 1.0, "HL-HIT@1": 1.0}
    assert highlight_metrics(scores, ts, [4])["HL-HIT@1"] == 0.0


def test_summary_by_hand() -> None:
    ts = [float(i) for i in range(6)]
    a = RecordScores([0.9, 0.8, 0.1, 0.1, 0.1, 0.1], [0, 1], ts, kind="semantic")
    b = RecordScores([0.9, 0.1, 0.1, 0.1, 0.1, 0.8], [4, 5], ts, kind="motion", moments=[[4.0, 6.0]])
    s = summarize([a, b], ks=(2,))
    assert s.counts == {"all": 2, "semantic": 1, "motion": 1}
    assert s.rows["semantic"]["recall@#pos"] == 1.0
    assert s.rows["motion"]["recall@#pos"] == 0.5  # top2 = {0, 5}
    assert s.rows["all"]["recall@#pos"] == 0.75
    # Uniform K=2 over 6 frames picks {1, 4}: recall 0.5 for both records.
    assert s.rows["all"]["uniform_recall@2"] == 0.5
    # a: moment (0, 2) vs GT (0, 2): IoU 1. b: moments (0, 1) then (5, 6) vs (4, 6): IoU 0, then 1/2.
    assert s.rows["all"]["mIoU"] == 0.5 and s.rows["all"]["R1@0.7"] == 0.5
    assert s.rows["all"]["R5@0.5"] == 1.0 and s.rows["all"]["R5@0.7"] == 0.5
    # HL per frame: a ranks both positives first (1); b: threshold .8 -> p 1/2 at r 1/2, .1 -> p 1/3 at r 1.
    assert s.rows["all"]["HL-mAP"] == pytest.approx((1 + (0.5 + 1 / 3) / 2) / 2)
    assert s.rows["all"]["HL-HIT@1"] == 0.5
    # AP of b: positive 5 at rank 2 (1/2), positive 4 at rank 6 among ties (0.1s keep order 1,2,3,4) -> 2/6.
    assert s.rows["motion"]["AP"] == pytest.approx((0.5 + 2 / 6) / 2)
    table = format_table(s, ks=(2,))
    assert "uniform" in table and "semantic" in table and not math.isnan(s.rows["all"]["AP"])


def test_record_errors() -> None:
    with pytest.raises(ValueError, match="no positive"):
        record_metrics(RecordScores([0.1, 0.2], [], [0.0, 1.0]))
    with pytest.raises(ValueError, match="outside"):
        record_metrics(RecordScores([0.1, 0.2], [2], [0.0, 1.0]))
