"""Shared by the tests that start the real tritonserver: skip where none is installed, a started server on a fresh
repository (conftest's session-wide `cpu_server`, or a module's own), its metrics and stubs, a reliability report."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from videoitg.serving import binaries, procfs
from videoitg.serving.ports import ServerError
from videoitg.serving.repository import RepoSpec, build_repository
from videoitg.serving.server import ServerOptions, TritonServer


def wait_until(done: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    """Polls `done` until it holds or `timeout_s` has passed: whether it held. A test waits on a signal from the
    server this way, not on a fixed pause a loaded machine may not honour."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True


async def settled(done: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> bool:
    """`wait_until` inside an event loop: the loop goes on serving between polls."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True


def read_until(proc: subprocess.Popen, prefix: str, timeout_s: float = 120) -> list[str]:
    """Lines of `proc`'s text output up to the first that starts with `prefix` (the last one returned), or up to its
    end or `timeout_s` (checked between lines)."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        lines.append(line)
        if line.startswith(prefix) or (not line and proc.poll() is not None):
            break
    return lines


def skip_without_tritonserver() -> None:
    """At module level: skip the whole module where no tritonserver is found."""
    try:
        binaries.find_tritonserver()
    except binaries.ServingSetupError as e:  # pragma: no cover - the serve extra is part of [all]
        pytest.skip(f"no tritonserver: {e}", allow_module_level=True)


# tritonserver 2.51's python backend sometimes aborts while loading models with this (an open upstream bug:
# triton-inference-server/server#8882); such a start is tried once more, any other failure is the test's.
UPSTREAM_ABORT = "boost::interprocess::lock_exception"


def start(srv: TritonServer, timeout_s: float = 240) -> TritonServer:
    """`srv.start`, tried a second time only when tritonserver aborted with UPSTREAM_ABORT."""
    try:
        return srv.start(timeout_s=timeout_s)
    except ServerError as e:
        if UPSTREAM_ABORT not in str(e):
            raise
        return srv.restart(timeout_s=timeout_s)  # the failed launch stopped what it had started


def served(spec: RepoSpec, tmp_path_factory: pytest.TempPathFactory,
           options: ServerOptions | None = None) -> Iterator[TritonServer]:
    """For a fixture (`yield from served(...)`): a started server on a new repository of `spec`, which must stop
    cleanly (exit code 0) when the fixture ends."""
    repo = build_repository(spec, tmp_path_factory.mktemp("repo"))
    srv = TritonServer(repo, options or ServerOptions(), log_path=tmp_path_factory.mktemp("log") / "tritonserver.log")
    start(srv)
    yield srv
    code = srv.stop()
    assert code == 0, f"tritonserver did not exit cleanly ({code}):\n{srv.log_tail()}"


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """Sum of a Prometheus metric's samples whose labels include `labels`."""
    total = 0.0
    for line in metrics_text.splitlines():
        if not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, lab = head.partition("{")
        if metric != name:
            continue
        got = dict(kv.split("=", 1) for kv in lab.rstrip("}").split(",") if "=" in kv)
        if all(got.get(k, "").strip('"') == v for k, v in labels.items()):
            total += float(value)
    return total


def stub_pids(server: TritonServer) -> dict[str, int]:
    """model name -> pid of one of its python-backend stubs (the server's own children only)."""
    return {m: min(pids) for m, pids in procfs.stub_pids(server.pid).items()}


def report(name: str, data: dict) -> None:
    out = os.environ.get("VIDEOITG_RELIABILITY_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=1))
