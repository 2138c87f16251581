"""`videoitg eval` on hostile or damaged input files: every problem is one line naming the file, the line and what is
wrong (a skipped record, or an error for the whole file), never a traceback; no table is sized by a number the
annotation file states."""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from videoitg.commands.cli import main
from videoitg.errors import InputError
from videoitg.eval.annotations import MAX_ANNOTATORS, max_clips, read_annotations
from videoitg.eval.results import read_predictions
from videoitg.jsonio import MAX_JSON_DEPTH, load_file, loads, text_lines

GOOD = {"qid": 1, "query": "a man walks in", "vid": "v", "duration": 10, "relevant_windows": [[0, 2]],
        "relevant_clip_ids": [0], "saliency_scores": [[4, 3, 2]]}


def _qvh(tmp_path: Path, *lines: bytes | str | dict) -> Path:
    p = tmp_path / "ann.jsonl"
    p.write_bytes(b"".join((x if isinstance(x, bytes) else (x if isinstance(x, str) else json.dumps(x)).encode())
                           + b"\n" for x in lines))
    return p


def _reasons(path: Path) -> dict[int, str]:
    good, bad = read_annotations(path)
    assert [r.qid for r in good] == [1]  # the good line is read whatever the others hold
    return {int(b.where.rsplit(":", 1)[1]): b.reason for b in bad}


def test_huge_clip_ids_and_durations_are_row_errors_not_tables(tmp_path: Path) -> None:
    """A clip id of 4e8 or an infinite duration is a row error, never a table of that size: tables are bounded by
    the decoder's 4 h, 7,200 two-second clips."""
    assert max_clips() == 7200
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    lines = [GOOD,
             {**GOOD, "relevant_clip_ids": [400_000_000]},
             {**GOOD, "duration": 1e12},
             '{"qid": 2, "query": "q", "vid": "v", "duration": 1e999, "relevant_windows": [[0, 2]], '
             '"relevant_clip_ids": [0], "saliency_scores": [[1]]}',
             {**GOOD, "relevant_clip_ids": [7200]},
             {**GOOD, "saliency_scores": [[1] * (MAX_ANNOTATORS + 1)]}]
    path = _qvh(tmp_path, *lines)
    vm = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) << 10
    resource.setrlimit(resource.RLIMIT_AS, (vm + (2 << 30), hard))  # 2 GiB more; the old code needs > 13 GB
    try:
        reasons = _reasons(path)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    assert "400000000" in reasons[2] and "0 to 7199" in reasons[2]
    assert "duration 1000000000000.0 s is over the 14400 s" in reasons[3]
    assert "duration inf s" in reasons[4]
    assert "got 7200" in reasons[5]
    assert f"{MAX_ANNOTATORS + 1} annotator scores" in reasons[6]


def test_bad_lines_of_an_annotation_file_are_one_line_each(tmp_path: Path) -> None:
    """null saliency scores, a byte that is not UTF-8, JSON nested 100,000 deep, a truncated line: each its own
    skipped line with the reason; the good line is still evaluated."""
    path = _qvh(tmp_path, GOOD,
                {**GOOD, "saliency_scores": [[None, 1, 2]]},
                b'{"qid": 3, "query": "caf\xe9", "vid": "v", "relevant_windows": [[0, 2]]}',
                "[" * 100_000 + "]" * 100_000,
                json.dumps(GOOD)[:40],
                {**GOOD, "saliency_scores": [[float("nan"), 1, 2]]},
                {**GOOD, "extra": json.loads("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1))})
    reasons = _reasons(path)
    assert reasons[2] == "saliency_scores of clip 0 hold null: every score must be a finite number"
    assert reasons[3] == "not valid UTF-8 text (byte 0xe9 at column 25)"
    assert reasons[4] == reasons[7] == f"JSON nested more than {MAX_JSON_DEPTH} levels deep"
    assert reasons[5].startswith("not valid JSON (")
    assert "hold NaN" in reasons[6]


def test_charades_line_with_a_bad_byte_is_skipped(tmp_path: Path) -> None:
    txt = tmp_path / "c.txt"
    txt.write_bytes(b"v 0 1##a person sits\nw 0 1##caf\xe9\n")
    good, bad = read_annotations(txt)
    assert [r.query for r in good] == ["a person sits"]
    assert bad[0].where.endswith(":2") and "not valid UTF-8" in bad[0].reason


@pytest.mark.parametrize("content, problem", [
    (b'[{"video": "a.mp4", "question": "caf\xe9", "clip_num": [1]}]', ":1: not valid UTF-8 text (byte 0xe9"),
    (b"[\n" + b"[" * 100_000 + b"]" * 100_000 + b"]", f": JSON nested more than {MAX_JSON_DEPTH} levels deep"),
    (b'[\n{"video": "a.mp4",\n "question": "q", "clip_num": [1', ":3: not valid JSON ("),
])
def test_videoitg_json_file_problems_name_file_and_line(tmp_path: Path, capsys, content: bytes,
                                                        problem: str) -> None:
    ann = tmp_path / "ann.json"
    ann.write_bytes(content)
    assert main(["eval", str(ann), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{ann}{problem}" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def _result(query: str) -> dict:
    return {"video_path": "/videos/v.mp4", "contexts": query, "doc_id": 0, "frame_indices": [0, 30, 60],
            "timestamps": [0.0, 1.0, 2.0], "scores": [0.9, 0.2, 0.1], "index": [0, 30, 60], "logits": [0.9, 0.2, 0.1]}


@pytest.mark.parametrize("line, problem", [
    (json.dumps(_result("b"))[:50], "not valid JSON (Unterminated string"),
    (b'{"contexts": "b\xff"}', "not valid UTF-8 text (byte 0xff"),
    ("[" * 100_000 + "]" * 100_000, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"),
    ("[1, 2]", "line is not a JSON object"),
    (json.dumps({**_result("b"), "scores": [None, 1, 2]}), "'scores' must hold finite numbers, got None"),
    (json.dumps({**_result("b"), "timestamps": [0.0]}), "differ in length (3, 3, 1)"),
    (json.dumps({"contexts": "b", "index": [1, 2], "logits": [0.5]}), "'index' and 'logits' must be lists of"),
    (json.dumps({"contexts": "b"}), "needs 'scores', 'frame_indices' and 'timestamps', or 'index' and 'logits'"),
])
def test_a_damaged_results_line_is_one_error_naming_file_and_line(tmp_path: Path, capsys, line, problem) -> None:
    ann = _qvh(tmp_path, {**GOOD, "query": "a"})
    res = tmp_path / "results.jsonl"
    res.write_bytes(json.dumps(_result("a")).encode() + b"\n\n" + (line if isinstance(line, bytes) else line.encode())
                    + b"\n")
    with pytest.raises(InputError, match=f"^{res}:3: ") as e:
        read_predictions(res)
    assert problem in str(e.value)
    assert main(["eval", str(ann), "--results", str(res), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"{res}:3: " in err and problem in err and "Traceback" not in err


def test_results_are_evaluated_when_every_line_is_whole(tmp_path: Path, capsys) -> None:
    ann = _qvh(tmp_path, {**GOOD, "query": "a"})
    res = tmp_path / "results.jsonl"
    res.write_text(json.dumps(_result("a")) + "\n" + json.dumps({**_result("a"), "scores": [0, 0, 0]}) + "\n")
    (p,) = read_predictions(res).values()
    assert p.line == 1 and p.scores == [0.9, 0.2, 0.1]  # the first line per (video, instruction) wins
    assert main(["eval", str(ann), "--results", str(res), "--quiet", "--k", "1"]) == 0


@pytest.mark.parametrize("flags, problem", [
    (["--num-frames", "100000000"], "--num-frames must be 1 to 1024"),
    (["--num-frames", "0"], "--num-frames must be 1 to 1024"),
    (["--fps", "nan"], "target_fps must be a positive number, got nan"),
    (["--k", "x"], "--k needs positive integers"),
])
def test_bad_eval_flags_are_refused_before_anything_is_read(tmp_path: Path, capsys, flags, problem) -> None:
    ann = _qvh(tmp_path, GOOD)
    assert main(["eval", str(ann), "--results", str(tmp_path / "missing.jsonl"), *flags]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1


def test_jsonio_lines_split_at_newlines_only(tmp_path: Path) -> None:
    """U+2028 is valid inside a JSON string; str.splitlines would cut the line there."""
    p = tmp_path / "x.jsonl"
    p.write_text(json.dumps({"q": "a\u2028b"}, ensure_ascii=False) + "\n\n  \n" + '{"q": 2}\n', encoding="utf-8")
    assert [(n, loads(t)["q"], why) for n, t, why in text_lines(p)] == [(1, "a\u2028b", None), (4, 2, None)]
    (tmp_path / "big.json").write_text('{"n": ' + "9" * 5000 + "}")
    with pytest.raises(InputError, match="big.json: not valid JSON"):
        load_file(tmp_path / "big.json")
