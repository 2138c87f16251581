"""Batch input that must not take a run down or slip past its checks: a video swapped for a symlink between the
manifest check and the decode, a deeply nested manifest line, a row changed under its id between two runs, and
sampling flags that cannot run (refused before Ray starts)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.batch import make_clip
from videoitg.batch import runner
from videoitg.batch.inprocess import InProcessScorer
from videoitg.batch.runner import BatchOptions, run_batch
from videoitg.batch.scorers import Outcome, ScorerSpec, prepare_then_score, score_unit
from videoitg.batch.servers import read_checked
from videoitg.commands.cli import main
from videoitg.defaults import default_checkpoint
from videoitg.errors import InputError
from videoitg.jsonio import MAX_JSON_DEPTH
from videoitg.manifest.rows import Row, load_manifest
from videoitg.paths import open_resolved, pinned


class ReadingBackend:
    """Records the bytes `prepare` reads through the name it is given; scores each row as those bytes' size."""

    def __init__(self, spec: ScorerSpec | None = None) -> None:
        self.read: list[bytes] = []

    def prepare(self, video: str) -> bytes:
        data = Path(video).read_bytes()
        self.read.append(data)
        return data

    def score(self, prepared: bytes, row: Row) -> dict[str, Any]:
        return {"row_id": row.row_id, "contexts": row.instruction, "video_path": row.video, "bytes": len(prepared)}

    def score_unit(self, rows: list[Row]) -> list[Outcome]:
        return prepare_then_score(self.prepare, self.score, rows)


def _setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "v.mp4").write_bytes(b"inside video")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "v.mp4").write_bytes(b"SECRET bytes outside the root")
    manifest = root / "m.jsonl"
    manifest.write_text(json.dumps({"id": "a", "video": "sub/v.mp4", "instruction": "q"}) + "\n")
    return root, outside, manifest


@pytest.mark.parametrize("swap", ["file", "directory"])
def test_a_video_swapped_for_a_symlink_after_the_check_is_never_read(tmp_path: Path, swap: str) -> None:
    """The manifest checked sub/v.mp4 under the root; then the file (or its directory) became a symlink to a file
    outside. The row fails naming the change, and nothing outside the root is read."""
    root, outside, manifest = _setup(tmp_path)
    (row,) = load_manifest(manifest).rows
    if swap == "file":
        (root / "sub" / "v.mp4").unlink()
        os.symlink(outside / "v.mp4", root / "sub" / "v.mp4")
    else:
        (root / "sub" / "v.mp4").unlink()
        (root / "sub").rmdir()
        os.symlink(outside, root / "sub")
    backend = ReadingBackend()
    (out,) = score_unit(backend, [row])
    assert not out.ok and out.record["stage"] == "video" and out.record["error_type"] == "MediaChangedError"
    assert ("now a symlink" if swap == "file" else "changed after it was checked") in out.record["reason"]
    assert backend.read == []
    with pytest.raises(InputError):
        read_checked(row.video)  # the Triton backend's read


def test_the_decoder_reaches_the_file_that_was_checked(tmp_path: Path) -> None:
    """Inside `pinned`, the name handed to the decoder keeps reaching the opened file even when the path is
    replaced meanwhile (the decoder opens a file several times)."""
    root, outside, _ = _setup(tmp_path)
    video = str((root / "sub" / "v.mp4").resolve())
    with pinned(video) as name:
        (root / "sub" / "v.mp4").unlink()
        os.symlink(outside / "v.mp4", root / "sub" / "v.mp4")
        assert Path(name).read_bytes() == b"inside video"
        assert Path(name).read_bytes() == b"inside video"  # opened again: still the checked file
    with pytest.raises(InputError, match="now a symlink"):
        os.close(open_resolved(video))


def test_errors_name_the_rows_path_not_the_descriptor(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    row = Row("b", 1, str(bad.resolve()), "q")
    (out,) = score_unit(InProcessScorer(ScorerSpec(checkpoint=str(default_checkpoint()), num_frames=8)), [row])
    assert not out.ok and str(bad.resolve()) in out.record["reason"] and "/proc/self/fd" not in out.record["reason"]


def test_a_deeply_nested_manifest_line_is_that_rows_error(tmp_path: Path) -> None:
    """JSON nested 100,000 deep raised RecursionError out of load_manifest (the whole run stopped); one nested
    just past the bound would parse and then break the workers' messages."""
    make_clip(tmp_path / "v.mp4", 0)
    deep = MAX_JSON_DEPTH + 1
    (tmp_path / "m.jsonl").write_text("\n".join([
        json.dumps({"id": "good", "video": "v.mp4", "instruction": "q"}),
        '{"id": "deep", "video": "v.mp4", "instruction": "q", "x": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"id": "past", "video": "v.mp4", "instruction": "q",
                    "x": json.loads("[" * deep + "]" * deep)}),
        json.dumps({"id": "good2", "video": "v.mp4", "instruction": "q2"}),
    ]) + "\n")
    m = load_manifest(tmp_path / "m.jsonl")
    assert [r.row_id for r in m.rows] == ["good", "good2"]
    assert [(r.line, r.reason) for r in m.rejected] == [(2, f"JSON nested more than {MAX_JSON_DEPTH} levels deep"),
                                                        (3, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")]


def test_a_csv_field_over_the_csv_modules_limit_is_that_rows_error(tmp_path: Path) -> None:
    """csv raised "field larger than field limit" out of load_manifest: one long cell stopped the whole run."""
    make_clip(tmp_path / "v.mp4", 0)
    (tmp_path / "m.csv").write_text("video,instruction\nv.mp4,first\nv.mp4," + "a" * 200_000 + "\nv.mp4,third\n")
    m = load_manifest(tmp_path / "m.csv")
    assert [(r.line, r.instruction) for r in m.rows] == [(1, "first"), (3, "third")]
    assert [(r.line, r.reason) for r in m.rejected] == [
        (2, "unreadable CSV record (field larger than field limit (131072))")]


def _stream(units, opts):
    """`runner._stream` without Ray: the real ScoreActor over the units, in this process."""
    actor = runner.ScoreActor(opts.scorer)
    for u in units:
        yield from (str(x) for x in actor({"unit": np.array([json.dumps([r.to_json() for r in u])], dtype=object)})
                    ["out"])


def _run(manifest: Path, out: Path) -> dict[str, Any]:
    return run_batch(load_manifest(manifest), BatchOptions(str(out), ScorerSpec(), progress=False))


def test_a_row_changed_under_its_id_is_scored_again(tmp_path: Path, monkeypatch) -> None:
    """A row whose instruction (or video file) changed under the same id is scored again on the rerun, the run says
    how many changed, and results.jsonl holds the new record only."""
    monkeypatch.setattr(runner, "_stream", _stream)
    monkeypatch.setattr(runner, "make_scorer", ReadingBackend)
    for name in ("v1.mp4", "v2.mp4"):
        (tmp_path / name).write_bytes(name.encode())
    rows = [{"id": "a", "video": "v1.mp4", "instruction": "first"}, {"id": "b", "video": "v2.mp4", "instruction": "q"},
            {"id": "c", "video": "v1.mp4", "instruction": "third"}]
    manifest, out = tmp_path / "m.jsonl", tmp_path / "out"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = _run(manifest, out)
    assert (s["rows_todo"], s["rows_changed"]) == (3, 0)
    assert _run(manifest, out)["rows_todo"] == 0  # nothing changed: nothing to do

    rows[0]["instruction"] = "first, reworded"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    s = _run(manifest, out)
    assert (s["rows_todo"], s["rows_changed"], s["rows_already_done"]) == (1, 1, 2)
    got = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [(r["row_id"], r["contexts"]) for r in got] == [("a", "first, reworded"), ("b", "q"), ("c", "third")]
    assert s["merged"] == {"results": 3, "errors": 0, "duplicates_dropped": 0, "missing": 0}

    time.sleep(0.01)
    (tmp_path / "v2.mp4").write_bytes(b"v2, re-encoded")  # the video file under row b changed
    s = _run(manifest, out)
    assert (s["rows_todo"], s["rows_changed"]) == (1, 1)
    got = {json.loads(x)["row_id"]: json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()}
    assert got["b"]["bytes"] == len(b"v2, re-encoded") and got["a"]["bytes"] == got["c"]["bytes"] == 6


@pytest.mark.parametrize("flags, problem", [
    (["--target-fps", "nan"], "target_fps must be a positive number, got nan"),
    (["--num-frames", "100000"], "num_frames=100000 is over the limit of 512"),
    (["--num-frames", "0"], "num_frames must be >= 1"),
    (["--max-group-rows", "0"], "--max-group-rows must be a number >= 1"),
    (["--flush-seconds", "nan"], "--flush-seconds must be a positive number"),
    (["--cpus-per-worker", "0"], "--cpus-per-worker must be a positive number"),
])
def test_bad_sampling_and_run_flags_are_one_line_before_anything_starts(tmp_path: Path, capsys, flags,
                                                                         problem) -> None:
    """`--target-fps nan` and `--num-frames 100000` were found only inside a Ray actor, after start-up, with a
    traceback."""
    _, _, manifest = _setup(tmp_path)
    t0 = time.monotonic()
    assert main(["batch", str(manifest), "--out", str(tmp_path / "out"), "--no-progress", *flags]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.monotonic() - t0 < 10 and not (tmp_path / "out").exists()  # no Ray, no output folder
