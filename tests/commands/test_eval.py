"""`videoitg eval`: a checkpoint on annotated data, and the same numbers from a results.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.support.train import eval_setup
from videoitg.commands.cli import main
from videoitg.eval.scoring import BATCH_INSTRUCTIONS
from videoitg.manifest.grouping import group_by_video
from videoitg.outputs import write_results_jsonl
from videoitg.pipeline.scorer import Scorer
from videoitg.request.limits import Limits
from videoitg.train.data import TRAIN_SAMPLING, parse_records


def test_eval_writes_table_and_json(tmp_path: Path, capsys) -> None:
    data, ckpt = eval_setup()
    assert main(["eval", str(data), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--k", "2,4",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "uniform" in out and "recall@#pos" in out
    res = json.loads((tmp_path / "eval.json").read_text())
    n = len(json.loads(data.read_text()))
    assert res["counts"]["all"] == n and res["skipped"] == 0
    row = res["metrics"]["all"]
    for key in ("recall@#pos", "recall@2", "precision@4", "AP", "R1@0.5", "mIoU", "uniform_recall@2"):
        assert 0.0 <= row[key] <= 1.0
    assert len((tmp_path / "per_record.jsonl").read_text().splitlines()) == n


def test_results_jsonl_gives_the_same_numbers(tmp_path: Path) -> None:
    data, ckpt = eval_setup()
    scorer = Scorer(ckpt, sampling=TRAIN_SAMPLING, limits=Limits(max_sampled_frames=TRAIN_SAMPLING.num_frames))
    records, _ = parse_records(data)
    recs = []
    with torch.no_grad():  # as `eval --checkpoint` scores (`score_records`): the same padded batches, same numbers
        for video, group in group_by_video(records).items():
            path = data.parent / "videos" / video
            feats = scorer.stream_features(path)
            for i in range(0, len(group), BATCH_INSTRUCTIONS):
                for res in scorer.score_visual([(feats, r.question) for r in group[i : i + BATCH_INSTRUCTIONS]]):
                    recs.append(res.to_record(video_path=str(path)))
    write_results_jsonl(tmp_path / "results.jsonl", recs, append=False)
    assert main(["eval", str(data), "--checkpoint", str(ckpt), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["eval", str(data), "--results", str(tmp_path / "results.jsonl"), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0
    a = json.loads((tmp_path / "a" / "eval.json").read_text())["metrics"]["all"]
    b = json.loads((tmp_path / "b" / "eval.json").read_text())["metrics"]["all"]
    assert b == pytest.approx(a, abs=1e-6)


def test_eval_reports_bad_records(tmp_path: Path) -> None:
    data, ckpt = eval_setup()
    recs = json.loads(data.read_text())
    ann = data.parent / "bad.json"
    ann.write_text(json.dumps(recs + [{**recs[0], "video": "nope.mp4"}, {**recs[0], "clip_num": [500]}]))
    assert main(["eval", str(ann), "--checkpoint", str(ckpt), "--out", str(tmp_path), "--quiet",
                 "--video-root", str(data.parent / "videos")]) == 0
    res = json.loads((tmp_path / "eval.json").read_text())
    assert res["counts"]["all"] == len(recs) and res["skipped"] == 2
    lines = (tmp_path / "skipped_records.jsonl").read_text().splitlines()
    reasons = [json.loads(x)["reason"] for x in lines]
    assert any("nope.mp4" in r for r in reasons) and any("out of range" in r for r in reasons)
