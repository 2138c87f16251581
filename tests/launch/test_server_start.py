"""How long the launcher waits for tritonserver to become ready: while its log grows or its processes use CPU, with
stand-in processes (no tritonserver needed); `StartProgress` itself is checked on numbers."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.support.server import wait_until
from videoitg.launch import server as server_mod
from videoitg.launch.ports import ServerError, StartCancelled
from videoitg.launch.procfs import cpu_s, group_cpu_s
from videoitg.launch.server import StartProgress, TritonServer


def test_progress_extends_the_wait_and_a_stall_ends_it() -> None:
    p = StartProgress(stall_s=10.0, started=0.0)
    p.observe(100, 1.0, now=0.0)
    for t in range(5, 60, 5):  # the log grows every 5 s for a minute: never stalled
        p.observe(100 + t, 1.0, now=float(t))
        assert p.expired(float(t) + 1.0) is None
    assert p.expired(64.0) is None  # 55 s was the last change
    assert "moved for 10 s" in (p.expired(65.5) or "")


def test_cpu_time_alone_counts_as_progress_and_max_s_bounds_the_whole_wait() -> None:
    p = StartProgress(stall_s=10.0, max_s=30.0, started=0.0)
    for t in range(0, 30, 5):  # a stub hashing weights: no log line, CPU time rising
        p.observe(0, float(t), now=float(t))
        assert p.expired(float(t)) is None
    assert "after 30 s" in (p.expired(30.0) or "")


def test_group_cpu_s_reads_a_busy_process_group() -> None:
    # spins until it has used 3 CPU seconds of its own, however long a busy machine takes to give them
    busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile time.process_time() < 3: pass"],
                            start_new_session=True)
    try:
        assert wait_until(lambda: group_cpu_s(busy.pid) > 0.3, 60)
    finally:
        busy.kill()
        busy.wait(timeout=10)


SPIN = """
import sys, threading, time
done = threading.Event()
def spin():
    t0 = time.thread_time()
    while time.thread_time() - t0 < 0.003:
        pass
    print(time.thread_time() - t0, flush=True)
    done.wait()  # alive while it is counted: cpu_s reads live threads
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=spin).start()
sys.stdin.readline()
done.set()
"""


def test_cpu_s_counts_every_live_thread_finer_than_a_clock_tick() -> None:
    """A second thread's 3 ms of CPU, in a process doing nothing else, shows as 3-7 ms (the rest: its main thread's
    pipe reads); clock ticks would say 0 or 10 ms."""
    child = subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        before = cpu_s(child.pid)
        child.stdin.write("spin\n")
        child.stdin.flush()
        spun = float(child.stdout.readline())
        used = cpu_s(child.pid) - before
        child.stdin.write("end\n")
        child.stdin.flush()
    finally:
        child.wait(timeout=10)
    assert spun <= used <= spun + 0.004, (used, spun)


def _stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ready_after_s: float) -> TritonServer:
    monkeypatch.setattr(server_mod.binaries, "find_tritonserver", lambda: None)
    repo = tmp_path / "repo"
    repo.mkdir()
    srv = TritonServer(repo, log_path=tmp_path / "server.log")
    srv.log_path.write_bytes(b"")
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    srv._proc = subprocess.Popen(sleeper, start_new_session=True)
    srv._front = subprocess.Popen(sleeper, start_new_session=True)
    ready_at = time.monotonic() + ready_after_s
    monkeypatch.setattr(TritonServer, "_ready", staticmethod(lambda url, context=None: time.monotonic() >= ready_at))
    monkeypatch.setattr(TritonServer, "_answered_by_us", lambda self: True)
    return srv


def _end(srv: TritonServer) -> None:
    for p in (srv._proc, srv._front):
        p.kill()
        p.wait(timeout=10)


def test_a_slow_load_that_keeps_logging_becomes_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ready after 3 s with a 1 s window: the log grows meanwhile (a fixed 1 s wait gave up)."""
    srv = _stand_in(tmp_path, monkeypatch, ready_after_s=3.0)
    stop = threading.Event()

    def log() -> None:
        with srv.log_path.open("ab") as f:
            while not stop.wait(0.25):
                f.write(b"I loading model shard\n")
                f.flush()

    writer = threading.Thread(target=log, daemon=True)
    writer.start()
    t0 = time.monotonic()
    try:
        srv.wait_ready(1.0)
        assert time.monotonic() - t0 >= 2.5
    finally:
        stop.set()
        writer.join()
        _end(srv)


def test_a_start_with_no_progress_ends_after_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = _stand_in(tmp_path, monkeypatch, ready_after_s=60.0)
    t0 = time.monotonic()
    try:
        with pytest.raises(ServerError, match="neither its log nor its CPU time moved for 1 s"):
            srv.wait_ready(1.0)
        assert time.monotonic() - t0 < 10.0
    finally:
        _end(srv)


def test_tritonservers_own_ports_are_never_the_public_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The front binds the public ports while tritonserver binds its own: a public port the OS hands out again
    must not become one of tritonserver's (both would start, one would fail on 'already in use')."""
    srv = TritonServer(tmp_path)
    srv.http_port, srv.grpc_port, srv.metrics_port = 40001, 40002, 40003
    offers = iter([[40003, 50001, 50002], [50003, 50004, 50005]])
    monkeypatch.setattr(server_mod, "free_ports", lambda n, host="127.0.0.1": next(offers))
    assert srv._internal_ports() == (50003, 50004, 50005)


def test_a_stop_asked_for_while_starting_ends_the_wait(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: SIGINT to `videoitg serve` ignored until the start's stall bound (180 s) was over."""
    srv = _stand_in(tmp_path, monkeypatch, ready_after_s=60.0)
    asked = time.monotonic() + 0.5
    t0 = time.monotonic()
    try:
        with pytest.raises(StartCancelled, match="a stop was asked for while tritonserver was starting"):
            srv.wait_ready(180.0, cancelled=lambda: time.monotonic() >= asked)
        assert time.monotonic() - t0 < 30  # not the start's 60 s (a hang guard, not a speed)
    finally:
        _end(srv)
