"""`videoitg eval` on the public annotation layouts (QVHighlights JSONL, Charades-STA text, VideoITG-40K JSON),
and on results files: upstream-only keys (frame numbers, not seconds) and predictions made with other sampling."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.train import as_qvhighlights, eval_setup
from videoitg.commands.cli import main
from videoitg.eval.annotations import read_annotations
from videoitg.outputs import write_results_jsonl
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams
from videoitg.train.data import TRAIN_SAMPLING, parse_records


def test_readers_and_their_rejections(tmp_path: Path) -> None:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "AO8RW.webm").write_bytes(b"x")
    txt = tmp_path / "charades.txt"
    txt.write_text("AO8RW 0.0 6.9##a person is putting a book on a shelf.\n"
                   "Y6R7T 12.5 18##person opens the door\nbroken line\nZ 5 3##backwards window\n")
    good, bad = read_annotations(txt, video_root=tmp_path / "videos")
    assert [(r.video, r.windows, r.query) for r in good] == [
        ("AO8RW.webm", [(0.0, 6.9)], "a person is putting a book on a shelf."),  # the extension found on disk
        ("Y6R7T.mp4", [(12.5, 18.0)], "person opens the door")]
    assert [b.where.rsplit(":", 1)[1] for b in bad] == ["3", "4"]
    qvh = tmp_path / "qvh.jsonl"
    qvh.write_text(json.dumps({"qid": 7, "query": "man walks in", "vid": "abc_60.0_210.0", "duration": 10,
                               "relevant_windows": [[0, 2], [6, 10]], "relevant_clip_ids": [0, 3, 4],
                               "saliency_scores": [[4, 4, 2], [1, 0, 3], [2, 2, 2]]}) + "\n"
                   + json.dumps({"qid": 8, "query": "x", "vid": "v", "relevant_windows": [[3, 1]]}) + "\n")
    good, bad = read_annotations(qvh)
    (r,) = good
    assert r.windows == [(0.0, 2.0), (6.0, 10.0)] and r.video == "abc_60.0_210.0.mp4" and r.qid == 7
    assert r.saliency == [[4, 4, 2], [0, 0, 0], [0, 0, 0], [1, 0, 3], [2, 2, 2]]  # 5 clips of 2 s
    assert "relevant_windows" in bad[0].reason


def test_eval_qvhighlights_and_charades_layouts(tmp_path: Path) -> None:
    data, ckpt = eval_setup()
    qvh = as_qvhighlights(data, data.parent / "qvh.jsonl")
    assert main(["eval", str(qvh), "--checkpoint", str(ckpt), "--out", str(tmp_path / "q"), "--k", "2",
                 "--quiet"]) == 0
    res = json.loads((tmp_path / "q" / "eval.json").read_text())
    n = len(json.loads(data.read_text()))
    assert res["format"] == "qvhighlights" and res["counts"]["all"] == n and res["sampling"] == "eval:512:1"
    row = res["metrics"]["all"]
    for key in ("R1@0.3", "R1@0.5", "R1@0.7", "R5@0.5", "R5@0.7", "mIoU", "HL-mAP", "HL-HIT@1", "recall@2"):
        assert 0.0 <= row[key] <= 1.0
    per = [json.loads(x) for x in (tmp_path / "q" / "per_record.jsonl").read_text().splitlines()]
    assert len(per) == n and all(p["moments"] and len(p["moments"][0]) == 3 for p in per)
    assert all(p["iou"] == p["ious"][0] and p["qid"] is not None for p in per)

    charades = data.parent / "charades.txt"
    charades.write_text("".join(f"{Path(r['video']).stem} {a} {b}##{r['question']}\n"
                                for r in json.loads(data.read_text()) for a, b in r["segments"][:1]))
    assert main(["eval", str(charades), "--checkpoint", str(ckpt), "--out", str(tmp_path / "c"), "--quiet"]) == 0
    assert json.loads((tmp_path / "c" / "eval.json").read_text())["format"] == "charades"


def _results(scorer, data: Path, path: Path, upstream_only: bool) -> Path:
    records, _ = parse_records(data)
    recs = []
    for r in records:
        video = data.parent / "videos" / r.video
        rec = scorer.score(video, r.question).to_record(video_path=str(video))
        recs.append({k: rec[k] for k in ("index", "logits", "num_frames", "contexts", "video_path", "doc_id")}
                    if upstream_only else rec)
    write_results_jsonl(path, recs, append=False)
    return path


def test_upstream_results_are_read_in_seconds_not_frame_numbers(tmp_path: Path) -> None:
    """Only `index` (frame numbers) and `logits`: the clips run at 2 fps, so frame 10 is at 5 s, not 10 s."""
    data, ckpt = eval_setup()
    scorer = Scorer(ckpt, sampling=TRAIN_SAMPLING, limits=Limits(max_sampled_frames=1024))
    ours = _results(scorer, data, tmp_path / "ours.jsonl", upstream_only=False)
    upstream = _results(scorer, data, tmp_path / "upstream.jsonl", upstream_only=True)
    assert main(["eval", str(data), "--results", str(ours), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["eval", str(data), "--results", str(upstream), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a = [json.loads(x) for x in (tmp_path / "a" / "per_record.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "per_record.jsonl").read_text().splitlines()]
    assert len(a) == len(b) == len(json.loads(data.read_text()))
    assert [x["timestamps"] for x in b] == [x["timestamps"] for x in a]  # seconds from the probed frame rate
    assert [x["gt_windows"] for x in b] == [x["gt_windows"] for x in a]

    # The video cannot be found: refused, naming what is missing, instead of reading frame numbers as seconds.
    moved = tmp_path / "moved.jsonl"
    moved.write_text(upstream.read_text().replace(str(data.parent / "videos"), str(tmp_path / "gone")))
    assert main(["eval", str(data), "--results", str(moved), "--video-root", str(tmp_path / "gone"),
                 "--out", str(tmp_path / "c")]) == 2
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "c" / "skipped_records.jsonl").read_text().splitlines()]
    assert reasons and all("frame rate" in r and "not found" in r for r in reasons)


def test_results_with_other_sampling_are_refused(tmp_path: Path, capsys) -> None:
    """clip_num index the annotation's sampling (all frames at 1 fps here); 4 frames per clip do not line up."""
    data, ckpt = eval_setup()
    sparse = _results(Scorer(ckpt, sampling=SamplingParams(4, 1.0, "eval")), data, tmp_path / "r.jsonl", False)
    assert main(["eval", str(data), "--results", str(sparse), "--out", str(tmp_path / "o")]) == 2
    assert "no record could be evaluated" in capsys.readouterr().err
    reasons = [json.loads(x)["reason"] for x in (tmp_path / "o" / "skipped_records.jsonl").read_text().splitlines()]
    assert reasons and all("not the annotation's sampling" in r and "--sampling train" in r for r in reasons)
