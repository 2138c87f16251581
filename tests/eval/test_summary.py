"""`videoitg eval --submission FILE`: QVHighlights' official submission format, read back and checked against what
was evaluated; the per-clip saliency of clips no sampled frame falls in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.train import as_qvhighlights, eval_setup
from videoitg.commands.cli import main
from videoitg.eval.metrics import clip_scores, interpolated_ap, moment_map
from videoitg.eval.summary import RecordScores, submission_record
from videoitg.moments import MomentParams


def test_a_clip_without_a_sampled_frame_takes_the_frame_covering_its_centre() -> None:
    # Frames at 0, 1 and 5 s cover [0, 1), [1, 5) and [5, 7.5) (the last one a median gap of 2.5 s).
    scores, ts = [0.2, 0.6, 0.9], [0.0, 1.0, 5.0]
    # clip 0 [0, 2): mean of frames 0 and 1 = 0.4; clip 1 [2, 4): no frame, centre 3 s in frame 1's span -> 0.6;
    # clip 2 [4, 6): frame 2; clip 3 [6, 8): centre 7 s in frame 2's span; clip 4: centre 9 s past every span,
    # the last frame.
    assert clip_scores(scores, ts, 5) == pytest.approx([0.4, 0.6, 0.9, 0.9, 0.9])
    # A clip before the first frame takes the first frame.
    assert clip_scores([0.3, 0.7], [2.5, 4.5], 3) == pytest.approx([0.3, 0.3, 0.7])


def test_submission_record_by_hand() -> None:
    ts = [0.0, 4.0, 8.0]  # one frame every 4 s: clips 1, 3 and 5 hold none
    r = RecordScores([0.1, 0.9, 0.3], [1], ts, moments=[(4.0, 8.0)], duration=12.0,
                        saliency=[[0, 0, 0], [0, 1, 0], [4, 4, 3], [2, 2, 2], [0, 0, 0], [0, 0, 0]],
                        info={"qid": 7, "query": "man walks in", "vid": "abc_60.0_210.0", "video": "x.mp4"})
    sub = submission_record(r, MomentParams(thresholds=(0.5,), min_gap_s=0.0))
    assert list(sub) == ["qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"]
    assert (sub["qid"], sub["query"], sub["vid"]) == (7, "man walks in", "abc_60.0_210.0")
    assert sub["pred_relevant_windows"] == [[4.0, 8.0, pytest.approx(0.9)]]
    # Six 2-s clips (the saliency table's); the empty ones take the frame whose span covers their centre.
    assert sub["pred_saliency_scores"] == pytest.approx([0.1, 0.1, 0.9, 0.9, 0.3, 0.3])
    # Without a saliency table: whole 2-s clips of the duration (int(12.9 / 2) = 6).
    r.saliency, r.duration = None, 12.9
    assert len(submission_record(r)["pred_saliency_scores"]) == 6


def test_eval_writes_the_official_submission_file(tmp_path: Path, capsys) -> None:
    data, ckpt = eval_setup()
    qvh = as_qvhighlights(data, data.parent / "qvh.jsonl")
    sub_path = tmp_path / "hl_val_submission.jsonl"
    assert main(["eval", str(qvh), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o"), "--quiet",
                 "--submission", str(sub_path)]) == 0
    assert "QVHighlights submission format" in capsys.readouterr().out
    gt = {d["qid"]: d for d in map(json.loads, qvh.read_text().splitlines())}
    sub = [json.loads(x) for x in sub_path.read_text().splitlines()]
    assert sorted(d["qid"] for d in sub) == sorted(gt)  # every query once: the official qid check passes
    res = json.loads((tmp_path / "o" / "eval.json").read_text())["metrics"]["all"]
    per = {p["qid"]: p for p in map(json.loads, (tmp_path / "o" / "per_record.jsonl").read_text().splitlines())}
    maps, hl = [], []
    for d in sub:
        g = gt[d["qid"]]
        assert set(d) == {"qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"}
        assert (d["query"], d["vid"]) == (g["query"], g["vid"])
        windows = d["pred_relevant_windows"]
        assert windows and all(len(w) == 3 and 0 <= w[0] < w[1] <= g["duration"] + 1e-9 for w in windows)
        assert [w[2] for w in windows] == sorted((w[2] for w in windows), reverse=True)  # best first
        assert np.allclose(windows, per[d["qid"]]["moments"], atol=1e-3)  # what was evaluated
        clips = int(g["duration"] / 2)
        assert len(d["pred_saliency_scores"]) == clips
        # The file's numbers give back the evaluated metrics, by the definitions alone.
        maps.append(moment_map(windows, g["relevant_windows"])["MR-mAP"])
        full = np.zeros((clips, 3))
        full[g["relevant_clip_ids"]] = g["saliency_scores"]
        hl.append(np.mean([interpolated_ap(full[:, a] >= 4, d["pred_saliency_scores"]) for a in range(3)]))
    assert np.mean(maps) == pytest.approx(res["MR-mAP"], abs=1e-9)
    assert np.mean(hl) == pytest.approx(res["HL-mAP"], abs=1e-9)
    for key in ("MR-mAP", "MR-mAP@0.5", "MR-mAP@0.75"):
        assert 0.0 <= res[key] <= 1.0


def test_lines_left_out_by_limit_are_named_like_skipped_ones(tmp_path: Path, capsys) -> None:
    data, ckpt = eval_setup()
    qvh = as_qvhighlights(data, data.parent / "qvh.jsonl")
    total = len(qvh.read_text().splitlines())
    sub_path = tmp_path / "s.jsonl"
    assert main(["eval", str(qvh), "--checkpoint", str(ckpt), "--quiet", "--limit", "2",
                 "--submission", str(sub_path)]) == 0
    assert len(sub_path.read_text().splitlines()) == 2
    assert f"note: {total - 2} annotation line(s) were skipped or left out by --limit" in capsys.readouterr().out


def test_submission_is_for_qvhighlights_only(tmp_path: Path, capsys) -> None:
    data, ckpt = eval_setup()
    assert main(["eval", str(data), "--checkpoint", str(ckpt), "--submission", str(tmp_path / "s.jsonl")]) == 2
    assert "QVHighlights" in capsys.readouterr().err and not (tmp_path / "s.jsonl").exists()
