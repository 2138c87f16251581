"""Supervision of the server's own processes under faults a deployment meets, through `videoitg serve` on a small
python repository and the real tritonserver: SIGHUP (a closed terminal), the front killed (its cgroup's OOM kill), the
front or tritonserver stopped (and so hung: `ProcessWatch`), a public port another process takes between a stop and
a restart. Servers of their own: each test breaks its server."""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.launch import infer, serve, server_child, write_repo
from tests.support.server import skip_without_tritonserver, wait_until
from videoitg.launch import procfs
from videoitg.launch.ports import free_ports
from videoitg.launch.server import ServerOptions, TritonServer

pytestmark = pytest.mark.server

skip_without_tritonserver()


class Served:
    """A `videoitg serve` of a small repository, read line by line; `client` for its public ports."""

    def __init__(self, repo: Path, log: Path) -> None:
        self.ports = free_ports(3)
        self.proc = serve(["--model-repository", str(repo), "--log", str(log), "--http-port", str(self.ports[0]),
                           "--grpc-port", str(self.ports[1]), "--metrics-port", str(self.ports[2])])
        self.client = TritonServer(repo, ServerOptions())  # for its client helpers only: never started
        self.client.http_port = self.ports[0]
        self.out: list[str] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()  # a silent `serve` never blocks a test

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)

    def until(self, prefix: str, timeout_s: float = 120) -> str:
        """The first line of its output from now on that starts with `prefix`, within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            self.out.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line {prefix!r} within {timeout_s:.0f} s:\n{''.join(self.out)}")

    def rest(self, timeout_s: float = 60) -> str:
        """Its output until it exits."""
        self.proc.wait(timeout_s)
        time.sleep(0.2)
        while not self._lines.empty():
            self.out.append(self._lines.get())
        return "".join(self.out)

    @property
    def triton(self) -> int:
        return server_child(self.proc.pid)

    @property
    def front(self) -> int:
        return next(c for c in procfs.children(self.proc.pid) if c != self.triton)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(write_repo(tmp_path / "repo"), tmp_path / "server.log")
    try:
        s.until("ready:")
        yield s
    finally:
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGINT)
            try:
                s.proc.wait(60)
            except subprocess.TimeoutExpired:
                s.proc.kill()
                s.proc.wait()


def stop(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(60) == 0


def shm_regions() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("videoitg_*")}


def test_sighup_stops_serve_in_order_leaving_nothing(served: Served) -> None:
    """Catches: SIGHUP (the terminal of a foreground `serve` closed) killed the launcher at once (exit -1): nothing
    stopped in order, its /dev/shm regions and a generated repository left behind."""
    triton, ours = served.triton, f".{served.proc.pid}_"  # the launcher's tag names its regions (launch/shm.py)
    assert [r for r in shm_regions() if ours in r]
    served.proc.send_signal(signal.SIGHUP)
    rest = served.rest()
    assert served.proc.returncode == 0 and "SIGHUP: stopping tritonserver" in rest, rest
    assert "tritonserver stopped in" in rest and not procfs.state(triton)
    assert not [r for r in shm_regions() if ours in r], shm_regions()


def test_a_killed_front_is_started_again_alone_and_tritonserver_keeps_its_models(served: Served) -> None:
    """Catches: the front's death (an OOM kill under its cgroup) restarted tritonserver too, every model loaded
    again (minutes for a 7B checkpoint)."""
    triton, front = served.triton, served.front
    os.kill(front, signal.SIGKILL)
    served.until("the front ready again")
    assert "front exited unexpectedly (killed by SIGKILL)" in "".join(served.out)
    assert served.triton == triton and served.front != front
    assert infer(served.client) == [3.0, 4.0]
    stop(served)


@pytest.mark.parametrize("which", ["front", "tritonserver"])
def test_a_stopped_process_is_killed_and_started_again(which: str, served: Served) -> None:
    """Catches: a front or tritonserver stopped (SIGSTOP; a hang looks the same from outside) stayed so for good:
    every request waited for the front's bound, health said not live, and nothing repaired it."""
    pid = served.front if which == "front" else served.triton
    t0 = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    served.until("the front ready again" if which == "front" else "tritonserver ready again")
    out = "".join(served.out)
    assert f"{which} cannot answer: it is stopped (SIGSTOP); killing it to start it again" in out, out
    assert (served.front if which == "front" else served.triton) != pid
    assert infer(served.client) == [3.0, 4.0]
    assert time.monotonic() - t0 < 90  # a hang guard: about 2 looks, then a start
    stop(served)


def test_a_public_port_taken_between_a_stop_and_a_restart_is_waited_out(served: Served) -> None:
    """Catches: another process that took the HTTP port while tritonserver and the front were down ended `serve`
    (exit 1 after five failed starts, 15 s), though the port came free again soon after."""
    port, triton, front = served.ports[0], served.triton, served.front
    os.killpg(triton, signal.SIGKILL)
    os.kill(front, signal.SIGKILL)
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    assert wait_until(lambda: _bound(holder, port), 10)
    try:
        holder.listen()
        line = served.until("restart 1 waits:", 60)
        assert f"port {port} on 127.0.0.1 is not free" in line and f"held by pid {os.getpid()}" in line, line
        time.sleep(20)  # longer than five failed starts' backoff
        assert served.proc.poll() is None, "".join(served.out)
    finally:
        holder.close()
    served.until("tritonserver ready again", 60)
    assert infer(served.client) == [3.0, 4.0]
    stop(served)


def _bound(s: socket.socket, port: int) -> bool:
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
