"""Batch scoring without Ray: manifest checks, row ids, grouping, atomic shards, resume/merge, and the per-unit
scoring loop with the real tiny model."""

from __future__ import annotations

import json
import os

import pytest

from tests.support.batch import INSTRUCTIONS, local_stream, make_clip, make_manifest
from tests.support.compare import assert_picks_close, assert_records_close
from videoitg.batch import runner, store
from videoitg.batch.inprocess import InProcessScorer
from videoitg.batch.runner import BatchOptions, fingerprint, make_scorer, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.batch.store import OutputStore, atomic_write_lines
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError, VideoDecodeError
from videoitg.manifest.grouping import make_units
from videoitg.manifest.rows import load_manifest
from videoitg.pipeline.scorer import Scorer
from videoitg.request.options import RequestOptions, select
from videoitg.sampling import SamplingParams
from videoitg.writes import OutputError


# ---- manifest ----------------------------------------------------------------------------------------------------
def test_manifest_accepts_good_rows_and_rejects_every_bad_kind(tmp_path):
    path, good, bad = make_manifest(tmp_path, videos=3, per_video=2)
    m = load_manifest(path)
    assert sorted(r.doc_id for r in m.rows) == sorted([g["doc_id"] for g in good] + [900, 901])
    assert all(r.video.startswith(str((tmp_path / "data").resolve())) for r in m.rows)
    reasons = {r.row_id: r.reason for r in m.rejected}
    assert "outside the allowed roots" in reasons["902"]  # ../ escape
    assert "outside the allowed roots" in reasons["903"]  # symlink escape
    assert "outside the allowed roots" in reasons["904"]  # absolute path elsewhere
    assert "instruction" in reasons["905"]
    assert any(r.row_id is None and "not valid JSON" in r.reason for r in m.rejected)
    assert m.videos == 4  # 3 good + the corrupt one (it is a file under the root: decode finds out)


def test_allow_root_widens_and_file_uris(tmp_path):
    path, _, _ = make_manifest(tmp_path, videos=1, per_video=1)
    secret = (tmp_path / "outside" / "secret.mp4").resolve()
    m = load_manifest(path, [tmp_path / "data", tmp_path / "outside"])
    assert "904" in {r.row_id for r in m.rows}  # now allowed
    p2 = tmp_path / "data" / "uris.jsonl"
    p2.write_text("\n".join(json.dumps(r) for r in [
        {"id": "a", "video": f"file://{secret}", "instruction": "q"},
        {"id": "b", "video": f"file://evil.example.com{secret}", "instruction": "q"},
        {"id": "c", "video": "https://example.com/v.mp4", "instruction": "q"},
        {"id": "d", "video": "vids/missing.mp4", "instruction": "q"},
        {"id": "e", "video": "vids", "instruction": "q"},
    ]) + "\n")
    m = load_manifest(p2, [tmp_path / "outside", tmp_path / "data"])
    assert [r.row_id for r in m.rows] == ["a"] and m.rows[0].video == str(secret)
    reasons = {r.row_id: r.reason for r in m.rejected}
    assert "host" in reasons["b"] and "scheme" in reasons["c"]
    assert "does not exist" in reasons["d"] and "regular file" in reasons["e"]
    with pytest.raises(InputError, match="not an existing directory"):
        load_manifest(p2, [tmp_path / "nope"])


def test_row_ids_explicit_doc_id_content_and_duplicates(tmp_path):
    d = tmp_path
    make_clip(d / "v.mp4", 0)
    rows = [
        {"video": "v.mp4", "instruction": "a", "id": "x1", "doc_id": 7},
        {"video": "v.mp4", "instruction": "b", "doc_id": 7},
        {"video": "v.mp4", "instruction": "c", "doc_id": 7},  # duplicate id 7
        {"video": "v.mp4", "instruction": "d"},
        {"video": "v.mp4", "instruction": "d"},  # same content: second gets #2
    ]
    p = d / "m.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows))
    m = load_manifest(p)
    ids = [r.row_id for r in m.rows]
    assert ids[:2] == ["x1", "7"] and ids[2].startswith("c-") and ids[3] == ids[2] + "#2"
    assert [r.reason for r in m.rejected] == ["duplicate row id '7'"]
    # Content ids do not move when rows are inserted before them: resume stays keyed correctly.
    p.write_text("\n".join(json.dumps(r) for r in [{"video": "v.mp4", "instruction": "new"}] + rows))
    assert [r.row_id for r in load_manifest(p).rows][-2:] == ids[2:]


def test_csv_manifest(tmp_path):
    make_clip(tmp_path / "v.mp4", 0)
    p = tmp_path / "m.csv"
    p.write_text('video,instruction,doc_id,task\nv.mp4,"when, exactly?",12,videomme\nv.mp4,,13,x\n')
    m = load_manifest(p)
    assert len(m.rows) == 1
    r = m.rows[0]
    assert (r.row_id, r.doc_id, r.instruction, r.extra) == ("12", 12, "when, exactly?", {"task": "videomme"})
    assert "instruction" in m.rejected[0].reason
    bad = tmp_path / "m.txt"
    bad.write_text("x")
    with pytest.raises(InputError, match="unknown format"):
        load_manifest(bad)


# ---- grouping ----------------------------------------------------------------------------------------------------
def test_units_group_by_video_and_split_large_groups(tmp_path):
    path, _, _ = make_manifest(tmp_path, videos=3, per_video=5)
    rows = load_manifest(path).rows
    units = make_units(rows, group=True, max_group_rows=3)
    assert all(len({r.video for r in u}) == 1 and len(u) <= 3 for u in units)
    assert sorted(r.row_id for u in units for r in u) == sorted(r.row_id for r in rows)
    assert len(units) == 3 * 2 + 1  # 5 (v1: 6 with the long row) -> 2 units per video; the corrupt video: 1
    assert all(len(u) == 1 for u in make_units(rows, group=False))


# ---- store -------------------------------------------------------------------------------------------------------
def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    p = tmp_path / "f.jsonl"
    atomic_write_lines(p, ["a", "b"])
    atomic_write_lines(p, ["c"])
    assert p.read_text() == "c\n" and os.listdir(tmp_path) == ["f.jsonl"]


def test_resume_state_merge_and_dedupe(tmp_path):
    fp = {"scorer": "inprocess", "checkpoint": "abc"}
    s = OutputStore(tmp_path, fp)
    rec = lambda rid, v: {"row_id": rid, "index": [v]}
    s.write_shard([rec("a", 1), rec("b", 1)], [{"row_id": "c", "reason": "bad video"}])
    s.write_shard([rec("a", 2)], [{"row_id": "b", "reason": "late failure"}])  # a duplicated, b ok and failed
    # A dead session's temp file holds rows that were never renamed in: they are not done.
    (s.shard_dir / ".x.results.jsonl.tmp-999999").write_text(json.dumps(rec("d", 1)) + "\n")
    s.close()
    s = OutputStore(tmp_path, fp)  # the rerun
    st = s.scan()
    assert st.ok == {"a", "b"} and st.failed == {"c", "b"}
    assert st.done(retry_errors=False) == {"a", "b", "c"} and st.done(retry_errors=True) == {"a", "b"}
    merged = s.merge(["d", "c", "b", "a", "z"], [{"row_id": "line-9", "reason": "not JSON"}])
    assert merged == {"results": 2, "errors": 2, "duplicates_dropped": 1, "missing": 2}
    res = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["row_id"], r["index"]) for r in res] == [("b", [1]), ("a", [1])]  # manifest order, first wins
    errs = [json.loads(x)["row_id"] for x in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert errs == ["c", "line-9"]  # b succeeded, so its error is not reported


def test_store_refuses_a_different_configuration(tmp_path):
    OutputStore(tmp_path, {"checkpoint": "abc", "num_frames": 8}).close()
    with pytest.raises(InputError, match="num_frames: 8 -> 16"):
        OutputStore(tmp_path, {"checkpoint": "abc", "num_frames": 16})
    OutputStore(tmp_path, {"checkpoint": "abc", "num_frames": 16}, force=True).close()


def _decode_error_names() -> set[str]:

    names, todo = set(), [VideoDecodeError]
    while todo:
        c = todo.pop()
        names.add(c.__name__)
        todo += c.__subclasses__()
    return names


def test_one_driver_per_output_directory(tmp_path):
    first = OutputStore(tmp_path, {"a": 1})
    with pytest.raises(InputError, match="another batch run"):
        OutputStore(tmp_path, {"a": 1})
    first.close()
    OutputStore(tmp_path, {"a": 1}).close()


def test_a_triton_scorer_needs_an_endpoint_and_an_unknown_kind_is_refused_where_it_is_given():
    with pytest.raises(InputError, match="server"):
        make_scorer(ScorerSpec(kind="triton", servers=()))
    with pytest.raises(InputError, match="unknown scorer kind 'factory': inprocess or triton"):
        ScorerSpec(kind="factory")


def test_the_fingerprint_names_each_scorer_kind(tmp_path):
    """Every kind a spec can hold has its fingerprint (run.json): in-process pins the checkpoint's contents and the
    sampling, against servers the endpoints stand in for both."""
    inproc = fingerprint(BatchOptions(str(tmp_path), ScorerSpec(checkpoint=str(default_checkpoint()))))
    assert inproc["scorer"] == "inprocess" and len(inproc["checkpoint"]) == 16 and inproc["num_frames"] == 512
    served = fingerprint(BatchOptions(str(tmp_path), ScorerSpec(kind="triton", servers=("b:1", "a:1"),
                                                                options=RequestOptions(top_k=3))))
    assert served == {"scorer": "triton", "servers": ["a:1", "b:1"], "top_k": 3, "ranking_rule": "server default"}


# ---- the per-unit loop with the real model -----------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
def test_score_unit_reuses_visual_features_and_isolates_failures(tmp_path):
    path, _, _ = make_manifest(tmp_path, videos=2, per_video=3)
    rows = load_manifest(path).rows
    spec = ScorerSpec(checkpoint=str(default_checkpoint()), num_frames=8, target_fps=4.0,
                      options=RequestOptions(top_k=3))
    scorer = InProcessScorer(spec)
    good = [r for r in rows if r.video.endswith("v0.mp4")]
    long_row = next(r for r in rows if r.row_id == "901")
    long_row = type(long_row)(long_row.row_id, long_row.line, good[0].video, long_row.instruction)
    out = scorer.score_unit([good[0], long_row, *good[1:]])
    assert [o.ok for o in out] == [True, False, True, True]
    assert [o.cache_hit for o in out] == [False, True, True, True]
    assert out[1].record["stage"] == "score" and "tokens" in out[1].record["reason"]
    ref = Scorer(default_checkpoint(), sampling=SamplingParams(num_frames=8, target_fps=4.0))
    for o, r in zip([out[0], *out[2:]], good, strict=True):
        res = ref.score(r.video, r.instruction)
        want = res.to_record(doc_id=r.doc_id, video_path=r.video, picked=res.top_k_positions(3))
        assert o.record["row_id"] == r.row_id
        assert_records_close({k: o.record[k] for k in want}, want)  # another batch shape: within tolerance
    corrupt = next(r for r in rows if r.row_id == "900")
    bad = scorer.score_unit([corrupt, corrupt])
    assert [o.ok for o in bad] == [False, False]
    assert bad[0].record["stage"] == "video" and bad[0].record["error_type"] in _decode_error_names()
    assert bad[0].record["row"]["instruction"] == INSTRUCTIONS[0]


# ---- rows that are not text, or whose doc_id overflows -------------------------------------------------------------
def _hostile_manifest(d):
    """Good rows around a lone-surrogate instruction (valid JSON), a doc_id of 2**70, and a line that is not UTF-8."""
    make_clip(d / "v.mp4", 0)
    lines = [
        json.dumps({"video": "v.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 1}).encode(),
        b'{"video": "v.mp4", "instruction": "bad \\ud800 surrogate", "doc_id": 2}',
        json.dumps({"video": "v.mp4", "instruction": INSTRUCTIONS[1], "doc_id": 2**70}).encode(),
        b'{"video": "v.mp4", "instruction": "latin-1 \xe9t\xe9", "doc_id": 4}',
        b'{"video": "v.mp4", "instruction": "no id \\udfff"}',
        json.dumps({"video": "v.mp4", "instruction": INSTRUCTIONS[2], "doc_id": 6}).encode(),
    ]
    (d / "m.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return d / "m.jsonl"


def test_manifest_refuses_non_text_instructions_and_int64_overflow_per_row(tmp_path):
    m = load_manifest(_hostile_manifest(tmp_path))
    assert [r.doc_id for r in m.rows] == [1, 6]
    reasons = sorted(r.reason for r in m.rejected)
    assert len(reasons) == 4
    assert "doc_id 1180591620717411303424 does not fit a signed 64-bit integer" in reasons
    assert sum("not valid Unicode text (lone surrogate" in r for r in reasons) == 3  # \ud800, \xe9 bytes, \udfff
    assert all(r.row_id is not None for r in m.rejected)  # a content id even for the no-id surrogate row


def test_store_writes_records_holding_lone_surrogates_as_valid_json(tmp_path):
    s = OutputStore(tmp_path, {"a": 1})
    odd = "v-\udcff.mp4"  # a file name that is not UTF-8, as Python reads it (surrogateescape)
    s.write_shard([{"row_id": "a", "video_path": odd, "contexts": "été"}, {"row_id": "c", "contexts": "été"}],
                  [{"row_id": "b", "row": {"q": "\ud800"}}])
    s.merge(["a", "b", "c"], [{"row_id": "line-3", "row": "\udc80 raw"}])
    s.close()
    text = (tmp_path / "results.jsonl").read_text(encoding="utf-8")
    assert [json.loads(x) for x in text.splitlines()] == [{"row_id": "a", "video_path": odd, "contexts": "été"},
                                                           {"row_id": "c", "contexts": "été"}]
    assert text.splitlines()[1] == '{"row_id": "c", "contexts": "été"}'  # only records that need it are escaped
    errs = [json.loads(x) for x in (tmp_path / "errors.jsonl").read_text(encoding="utf-8").splitlines()]
    assert errs == [{"row_id": "b", "row": {"q": "\ud800"}}, {"row_id": "line-3", "row": "\udc80 raw"}]
    assert not list(tmp_path.rglob(".*.tmp-*"))


def test_atomic_write_removes_its_temp_file_on_error(tmp_path):
    def lines():
        yield "ok"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_lines(tmp_path / "f.jsonl", lines())
    assert os.listdir(tmp_path) == []


@pytest.mark.usefixtures("one_thread")
def test_in_process_run_writes_good_rows_and_each_bad_rows_error(tmp_path, monkeypatch):
    """Hostile rows (a lone surrogate, a doc_id of 2**70, a line that is not UTF-8) become error records; the good
    rows are scored and every shard is written whole (no temp shard left)."""
    monkeypatch.setattr(runner, "_stream", local_stream)
    spec = ScorerSpec(checkpoint=str(default_checkpoint()), num_frames=8, target_fps=4.0,
                      options=RequestOptions(top_k=3))
    out = tmp_path / "out"
    s = run_batch(load_manifest(_hostile_manifest(tmp_path)), BatchOptions(str(out), spec, progress=False))
    assert s["merged"] == {"results": 2, "errors": 4, "duplicates_dropped": 0, "missing": 0}
    assert [json.loads(x)["doc_id"] for x in (out / "results.jsonl").read_text().splitlines()] == [1, 6]
    assert not list(out.rglob(".*.tmp-*"))


# ---- request options in a manifest -------------------------------------------------------------------------------
@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_row_names_its_own_options_and_the_run_its_defaults(tmp_path, fmt):
    """A manifest column named as an option (`coverage`, `min_score`, `top_k`, ...) is that row's option over the
    run's (`--top-k`, ...); a CSV's text is read as the option's kind; a bad value fails its row alone, naming it."""
    make_clip(tmp_path / "v.mp4", 0)
    rows = [{"video": "v.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 1},
            {"video": "v.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 2, "coverage": 0.2},
            {"video": "v.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 3, "min_score": 0.5, "top_k": 2},
            {"video": "v.mp4", "instruction": INSTRUCTIONS[0], "doc_id": 4, "coverage": 7}]
    path = tmp_path / f"m.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        path.write_text("video,instruction,doc_id,coverage,min_score,top_k\n" + "".join(
            f'{r["video"]},"{r["instruction"]}",{r["doc_id"]},{r.get("coverage", "")},{r.get("min_score", "")},'
            f'{r.get("top_k", "")}\n' for r in rows))
    spec = ScorerSpec(checkpoint=str(default_checkpoint()), num_frames=8, target_fps=4.0,
                      options=RequestOptions(top_k=4))
    out = InProcessScorer(spec).score_unit(load_manifest(path).rows)
    assert [o.ok for o in out] == [True, True, True, False]
    assert "coverage must be a number from 0 to 1, got 7" in out[3].record["reason"]
    assert out[3].record["reason"].startswith("manifest row 4:")  # its line (JSONL), its record (CSV)
    ref = Scorer(default_checkpoint(), sampling=SamplingParams(num_frames=8, target_fps=4.0)).score(
        str(tmp_path / "v.mp4"), INSTRUCTIONS[0])
    for o, options in zip(out[:3], (RequestOptions(top_k=4), RequestOptions(top_k=4, coverage=0.2),
                                    RequestOptions(top_k=2, min_score=0.5)), strict=True):
        assert_picks_close(o.record["top_k"], [ref.frame_indices[i] for i in select(ref, options)], ref.logits,
                           "released")


def test_the_output_directory_is_written_without_following_planted_links(tmp_path):
    """A rerun finds links planted in its --out: the lock is never opened through one (nor truncated), the
    merged results never written through one; a results.jsonl that is a directory is an error naming it."""
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "system-file"
    target.write_text("keep me\n")
    (out / ".lock").symlink_to(target)
    with pytest.raises(OutputError, match=r"\.lock is a symbolic link"):
        store.OutputStore(out, {"scorer": "x"})
    assert target.read_text() == "keep me\n"
    (out / ".lock").unlink()
    s = store.OutputStore(out, {"scorer": "x"})
    try:
        (out / store.RESULTS).mkdir()
        with pytest.raises(OutputError, match=r"results.jsonl is a directory"):
            s.merge([], [])
    finally:
        s.close()
