"""Opt-in (VIDEOITG_RELIABILITY_RAY=1, about 3 minutes): the batch faults through the real `videoitg batch` CLI on a
local Ray, the path the suite's faster tests bypass.

- The tritonserver and its stubs are SIGKILLed mid-job (`--server`). The job must not hang and no row may be
  doubled. The rows it recorded as server errors come back with `--retry-errors` (see docs/reliability/defects.md, B1).
- A real 256 KiB tmpfs fills while shards are written (root only). The run must fail, leave no torn shard, and
  after space is freed the rerun must complete every row exactly once.

    VIDEOITG_RELIABILITY_RAY=1 VIDEOITG_RELIABILITY_REPORT=DIR pytest tests/batch/test_runner_faults_ray.py -s
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.batch import SAMPLING_ARGS, make_manifest
from tests.support.server import report, stub_pids
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec, build_repository

pytestmark = pytest.mark.skipif(os.environ.get("VIDEOITG_RELIABILITY_RAY") != "1",
                                reason="opt-in long run: set VIDEOITG_RELIABILITY_RAY=1")



def rows(p: Path) -> list[str]:
    return [json.loads(x)["row_id"] for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def torn_lines(out: Path) -> int:
    n = 0
    for f in (out / "shards").glob("*.jsonl"):
        for line in f.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                n += 1
    return n


def cli(manifest: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "videoitg", "batch", str(manifest), "--out", str(out), "--no-progress",
           "--object-store-mb", "128", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def finish(p: subprocess.Popen) -> tuple[int, str]:
    try:
        _, err = p.communicate(timeout=600)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the session this test created
    return p.returncode, err


def test_cli_server_killed_and_full_disk(tmp_path: Path) -> None:
    manifest, good, _ = make_manifest(tmp_path / "media", 4, 4)
    figures: dict[str, object] = {"good_rows": len(good)}

    # ---- the server killed mid-job ----
    repo = build_repository(RepoSpec(target="cpu"), tmp_path / "repo")
    srv = TritonServer(repo, ServerOptions(exit_timeout_s=3), log_path=tmp_path / "s1.log").start(timeout_s=300)
    ports = (srv.http_port, srv.grpc_port, srv.metrics_port)
    out = tmp_path / "out"
    args = ("--server", srv.grpc_url, "--no-group", "--shard-rows", "1", "--max-in-flight", "1")
    p = cli(manifest, out, *args)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "shards").glob("*.results.jsonl"))) < 3:
        time.sleep(0.1)
    for pid in [srv.pid, *stub_pids(srv).values()]:
        os.kill(pid, signal.SIGKILL)
    rc, _ = finish(p)
    srv.stop()
    figures.update(killed_run_rc=rc, killed_run_results=len(rows(out / "results.jsonl")),
                   killed_run_errors=len(rows(out / "errors.jsonl")))
    assert torn_lines(out) == 0
    srv2 = TritonServer(repo, ServerOptions(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2],
                                            exit_timeout_s=3), log_path=tmp_path / "s2.log").start(timeout_s=300)
    try:
        figures["plain_rerun_rc"], _ = finish(cli(manifest, out, *args))
        figures["plain_rerun_results"] = len(rows(out / "results.jsonl"))
        figures["retry_rerun_rc"], _ = finish(cli(manifest, out, *args, "--retry-errors"))
    finally:
        srv2.stop()
    got = rows(out / "results.jsonl")
    figures["retry_rerun_results"] = len(got)
    assert len(got) == len(set(got)) == len(good), figures

    # ---- a full disk while shards are written ----
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=262144", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        report("ray_faults", figures)
        pytest.skip("cannot mount a tmpfs here (needs root); the injected-ENOSPC variant is in test_reliability_batch")
    try:
        (disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(disk).free - 24 * 1024))
        out = disk / "out"
        local = ("--shard-rows", "2", "--top-k", "3", *SAMPLING_ARGS)
        rc, err = finish(cli(manifest, out, *local))
        figures.update(full_disk_rc=rc, full_disk_last_line=err.strip().splitlines()[-1] if err.strip() else "",
                       full_disk_shards=len(list((out / "shards").glob("*.jsonl"))), torn_lines=torn_lines(out))
        assert rc != 0 and "No space left on device" in err and figures["torn_lines"] == 0, figures
        (disk / "filler").unlink()
        figures["after_free_rc"], _ = finish(cli(manifest, out, *local))
        got = rows(out / "results.jsonl")
        figures["after_free_results"] = len(got)
        assert len(got) == len(set(got)) == len(good), figures
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    report("ray_faults", figures)
    print("ray faults:", figures)
