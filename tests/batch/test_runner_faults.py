"""Batch output under faults: a full disk while shards are written (the job stops with a clear error, no
corrupt shard, and the rerun completes every row exactly once), and manifests carrying the path inputs the
fuzzers found.

The full disk is a real 256 KiB tmpfs when this process may mount one (root), else ENOSPC injected at the store's
file writes. Ray is bypassed here: `runner._stream` is replaced by the same `ScoreActor` called in this process,
because the fault under test is in the driver's writing, which is the same either way (the Ray path itself, with
`kill -9` and resume, is tests/batch/test_runner_ray.py). The server killed during a Triton-backed batch job is in
tests/properties/test_served_load.py, which owns the server.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.batch import (
    SAMPLING_ARGS,
    assert_rows_close,
    check_shards,
    comparable,
    local_stream,
    make_manifest,
    read_jsonl,
)
from videoitg import writes
from videoitg.batch import runner, store
from videoitg.batch.runner import BatchOptions, run_batch
from videoitg.batch.scorers import ScorerSpec
from videoitg.defaults import default_checkpoint
from videoitg.manifest.rows import load_manifest
from videoitg.request.options import RequestOptions

TOP_K = 3
NUM_FRAMES, TARGET_FPS = int(SAMPLING_ARGS[1]), float(SAMPLING_ARGS[3])


def options(out: Path, scorer: ScorerSpec, **kw) -> BatchOptions:
    kw.setdefault("shard_rows", 2)
    return BatchOptions(out_dir=str(out), scorer=scorer, progress=False, **kw)


def inprocess_spec() -> ScorerSpec:
    return ScorerSpec(kind="inprocess", checkpoint=str(default_checkpoint()), num_frames=NUM_FRAMES,
                       target_fps=TARGET_FPS, options=RequestOptions(top_k=TOP_K), dtype="float32")


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("media")
    manifest, good, bad = make_manifest(root, videos=5, per_video=4)
    return {"manifest": manifest, "good": good, "bad": bad}


@pytest.fixture(scope="module")
def clean_run(media, tmp_path_factory: pytest.TempPathFactory):
    """The same manifest scored without any fault: what a faulted-then-resumed run must equal."""
    out = tmp_path_factory.mktemp("clean") / "out"
    mp = pytest.MonkeyPatch()
    mp.setattr(runner, "_stream", local_stream)
    try:
        summary = run_batch(load_manifest(media["manifest"]), options(out, inprocess_spec()))
    finally:
        mp.undo()
    assert summary["merged"]["missing"] == 0
    return {r["row_id"]: comparable(r) for r in read_jsonl(out / store.RESULTS)}, read_jsonl(out / store.ERRORS)


class FullDisk:
    """A real small tmpfs (root), else a quota on the bytes the product writes (`videoitg.writes`, injected ENOSPC)."""

    def __init__(self, base: Path, monkeypatch: pytest.MonkeyPatch, size: int = 256 * 1024) -> None:
        self.dir = base / f"disk-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir()
        self.kind = "tmpfs" if self._mount(size) else "injected"
        self.quota: list[int] = [size]
        if self.kind == "injected":
            monkeypatch.setattr(writes, "_write_all", self._write_all)

    def _mount(self, size: int) -> bool:
        if os.geteuid() != 0 or not shutil.which("mount"):
            return False
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.dir)],
                           capture_output=True)
        return r.returncode == 0

    def fill(self, leave: int) -> None:
        """Leave about `leave` bytes free."""
        if self.kind == "tmpfs":
            free = shutil.disk_usage(self.dir).free
            (self.dir / "filler").write_bytes(b"\0" * max(0, free - leave))
        else:
            self.quota[0] = leave

    def free_space(self) -> None:
        if self.kind == "tmpfs":
            (self.dir / "filler").unlink()
        else:
            self.quota[0] = 1 << 40

    def _write_all(self, fd: int, data: bytes) -> None:
        if len(data) > self.quota[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.quota[0] -= len(data)
        os.write(fd, data)

    def close(self) -> None:
        if self.kind == "tmpfs":
            subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)


def test_full_disk_stops_cleanly_and_resumes_exactly_once(media, clean_run, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    want_ok, want_err = clean_run
    monkeypatch.setattr(runner, "_stream", local_stream)
    disk = FullDisk(tmp_path, monkeypatch)
    try:
        out = disk.dir / "out"
        manifest = load_manifest(media["manifest"])
        disk.fill(leave=24 * 1024)  # room for run.json and a few shards, not for all 20 rows + merge
        with pytest.raises(OSError) as ei:
            run_batch(manifest, options(out, inprocess_spec()))
        assert ei.value.errno == errno.ENOSPC and "No space left" in str(ei.value)
        written = check_shards(out)  # no torn shard
        assert 0 < written < len(want_ok) + len(want_err), f"the disk filled at the wrong time ({written} rows)"
        disk.free_space()
        time.sleep(1.1)  # a new session name (second resolution): see test_two_sessions_in_one_second
        summary = run_batch(manifest, options(out, inprocess_spec()))
        assert summary["rows_already_done"] > 0  # resumed, not redone
        results = read_jsonl(out / store.RESULTS)
        ids = [r["row_id"] for r in results]
        assert len(ids) == len(set(ids)) and set(ids) == set(want_ok), "lost or doubled rows"
        assert_rows_close(results, want_ok)  # the run without a fault's rows
        errors = read_jsonl(out / store.ERRORS)
        assert sorted(e["row_id"] for e in errors) == sorted(e["row_id"] for e in want_err)
        assert summary["merged"]["missing"] == 0 and summary["merged"]["duplicates_dropped"] == 0
    finally:
        disk.close()
    print(f"full disk via {disk.kind}: {written} rows were on disk when it filled")


def test_two_sessions_in_one_second_keep_both(media, clean_run, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    want_ok, _ = clean_run
    monkeypatch.setattr(runner, "_stream", local_stream)
    monkeypatch.setattr(store.time, "strftime", lambda *a: "20261121T000000")  # both sessions in one second
    manifest = load_manifest(media["manifest"])
    half = dataclasses.replace(manifest, rows=manifest.rows[: len(manifest.rows) // 2])
    out = tmp_path / "out"
    run_batch(half, options(out, inprocess_spec()))  # e.g. a run stopped half-way ...
    run_batch(manifest, options(out, inprocess_spec()))  # ... and resumed at once, from the same process
    ids = [r["row_id"] for r in read_jsonl(out / store.RESULTS)]
    assert sorted(ids) == sorted(want_ok), "rows of the first session were lost"


BAD_PATHS = ["file:///data/%00x.mp4", "vids/\ud800.mp4", "file://[::1/v.mp4"]


def test_manifest_with_fuzzer_paths_rejects_only_those_rows(media, tmp_path: Path) -> None:
    src = media["manifest"]
    lines = src.read_text().splitlines()
    for i, v in enumerate(BAD_PATHS):
        lines.insert(2 + i, json.dumps({"video": v, "instruction": "when?", "doc_id": 990 + i}))
    path = src.parent / "manifest-fuzz.jsonl"
    path.write_text("\n".join(lines) + "\n")
    m = load_manifest(path)
    rejected = {r.row_id for r in m.rejected}
    assert {"990", "991", "992"} <= rejected
    assert len(m.rows) == len(load_manifest(src).rows)
