"""Batch scoring on a real local Ray through the CLI, in subprocesses: a run killed with `kill -9` mid-way, the same
command stopped by SIGTERM mid-way (a Kubernetes or Slurm stop: the driver stops taking work, writes every row it
already received, exits non-zero with "rerun to resume"; Ray's own start-up messages go to OUT/ray-driver.log, not the
terminal), then rerun on a 2-worker pool to completion: every good row exactly once, equal to in-process scores, bad
rows only in errors.jsonl, and every socket the runs listen on bound to the loopback interface."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support import require
from tests.support.batch import SAMPLING_ARGS, make_manifest, reference_record
from tests.support.compare import SCORED, assert_records_close
from tests.support.model import one_torch_thread
from tests.support.ray import REPO, kill_session, non_loopback_listeners, ray_env, records, run_to_end, session_pids
from videoitg.defaults import default_checkpoint
from videoitg.manifest.rows import load_manifest
from videoitg.pipeline.scorer import Scorer
from videoitg.sampling import SamplingParams

require(("ray", "pyarrow", "pandas"), "ray[data] (the batch extra) is not installed")  # Ray runs in subprocesses


TOP_K = 3
VIDEOS, PER_VIDEO = 8, 5


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    manifest, good, bad = make_manifest(root, VIDEOS, PER_VIDEO)
    return {"root": root, "manifest": manifest, "good": good, "bad": bad, "checkpoint": str(default_checkpoint())}


@pytest.fixture(scope="module")
def reference(media):
    """In-process scores of every good row: the same Scorer the workers load, one thread like each worker."""
    scorer = Scorer(media["checkpoint"], sampling=SamplingParams(num_frames=8, target_fps=4.0))
    rows = [r for r in load_manifest(media["manifest"]).rows if r.row_id not in media["bad"]]
    with one_torch_thread():
        return {r.row_id: reference_record(scorer.score(r.video, r.instruction), r, TOP_K) for r in rows}


def _cmd(media, out: Path, *extra: str, workers: int = 2, progress: bool = False) -> list[str]:
    return [sys.executable, "-m", "videoitg", "batch", str(media["manifest"]), "--out", str(out),
            "--checkpoint", media["checkpoint"], "--workers", str(workers), "--top-k", str(TOP_K),
            *([] if progress else ["--no-progress"]), "--object-store-mb", "128", *SAMPLING_ARGS, *extra]


def _assert_matches_reference(results: list[dict], reference: dict) -> None:
    assert sorted(r["row_id"] for r in results) == sorted(reference)
    for r in results:  # a Ray worker's computation against the in-process one: within tolerance
        assert_records_close(r, reference[r["row_id"]], fields=(*SCORED, "num_frames", "contexts", "video_path",
                                                                 "doc_id"))


def _assert_errors(errors: list[dict], bad: dict[str, str]) -> None:
    by_id = {e["row_id"]: e for e in errors}
    for rid, stage in bad.items():
        assert by_id[rid]["stage"] == stage and by_id[rid]["reason"], rid
    assert any(e["row_id"].startswith("line-") and "JSON" in e["reason"] for e in errors)
    assert len(errors) == len(bad) + 1


def _saved(shards: Path) -> list[dict]:
    """Every row the shards hold: results and errors."""
    return records(sorted(shards.glob("*.results.jsonl")) + sorted(shards.glob("*.errors.jsonl")))


def test_kill_9_then_sigterm_mid_run_then_rerun_exactly_once_equal_to_in_process(media, reference, tmp_path):
    """Three runs of one command in one test (each Ray start-up costs tens of CPU seconds on a 2-core machine)."""
    out = tmp_path / "out"
    shards = out / "shards"
    # One worker, ungrouped, one row per shard: the slowest way through, so there is a window to kill in (and
    # one actor to start instead of two on a shared 2-core machine).
    proc = subprocess.Popen(_cmd(media, out, "--no-group", "--shard-rows", "1", workers=1), cwd=REPO, env=ray_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    exposed: list[str] = []
    try:
        deadline, scan = time.monotonic() + 200, 0.0
        while time.monotonic() < deadline and proc.poll() is None:
            if shards.is_dir() and any(shards.glob("*.results.jsonl")):
                break
            if time.monotonic() >= scan:  # a scan of /proc costs tens of ms on a busy machine: twice a second
                exposed += non_loopback_listeners(session_pids(proc.pid))
                scan = time.monotonic() + 0.5
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)  # the driver, as `kill -9 PID` would
        proc.wait(timeout=30)
    finally:
        kill_session(proc.pid)
        proc.stdout.close()
        proc.stderr.close()
    assert exposed == [], f"Ray listened on non-loopback addresses: {exposed}"
    first = records(sorted(shards.glob("*.results.jsonl")))
    assert 0 < len(first) < len(reference), "the kill did not land mid-way"
    assert not (out / "results.jsonl").exists()

    # SIGTERM mid-way, with the progress bar on: ungrouped (every row decodes its clip) and nothing flushed on its
    # own, so every row finished since the start is still in the driver's buffer when the signal comes.
    before = len(_saved(shards))
    proc = subprocess.Popen(_cmd(media, out, "--no-group", "--shard-rows", "100000", "--flush-seconds", "100000",
                                 workers=1, progress=True), cwd=REPO, env=ray_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    try:
        deadline, seen = time.monotonic() + 240, 0
        while time.monotonic() < deadline and proc.poll() is None:
            seen = max((int(n) for n in re.findall(r"(\d+)/\d+ \[", "".join(err))), default=0)
            if seen >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None and seen >= 5, "the run ended before it could be stopped: " + "".join(err)[-2000:]
        os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        kill_session(proc.pid)
        proc.stdout.close()
    text = "".join(err)
    assert rc == 128 + signal.SIGTERM, text[-3000:]
    assert "stopped by SIGTERM" in text and "rerun the same command to resume" in text
    assert "Token authentication" not in text and "core_worker" not in text  # Ray's noise is in its log
    assert (out / "ray-driver.log").is_file()
    saved = records(sorted(shards.glob("*.results.jsonl")))
    assert len(_saved(shards)) - before >= seen, "rows the bar counted as finished were not written"
    assert len(saved) < len(reference), "the stop did not land mid-way"
    assert not (out / "results.jsonl").exists()

    # The rerun: the same command, grouped by video this time (grouping is not part of the result identity), on a
    # 2-worker pool, to completion.
    rc, stdout, stderr = run_to_end(_cmd(media, out))
    assert rc == 0, stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_already_done"] >= len(saved)
    assert summary["workers_used"] == 2  # both actors did work
    scored = summary["rows_ok"] + summary["rows_failed"]
    assert scored + summary["rows_already_done"] == len(reference) + 2  # + rows 900/901, which fail
    # Each unit decodes + encodes its video once; every other row of the unit reuses the features.
    assert summary["cache_hits"] == scored - summary["units"] > 0
    assert summary["merged"]["missing"] == 0
    all_results = records(sorted(shards.glob("*.results.jsonl")))
    counts = collections.Counter(r["row_id"] for r in all_results)
    assert set(counts) == set(reference) and set(counts.values()) == {1}, "a good row is missing or doubled"
    err_ids = {e["row_id"] for e in records(sorted(shards.glob("*.errors.jsonl")))}
    assert not err_ids & set(reference) and err_ids == {"900", "901"}
    _assert_matches_reference(records([out / "results.jsonl"]), reference)
    _assert_errors(records([out / "errors.jsonl"]), media["bad"])
