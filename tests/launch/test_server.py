"""The launcher (server.py, supervise.py) with the real tritonserver on small python-backend repositories (an echo
model and a slow one): restricted admin APIs, the stub watchdog, bounded stops, the launcher's life and its ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import base64
import shutil
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException

from tests.support import ROOT
from tests.support.launch import serve, server_child, write_model, write_repo
from tests.support.server import read_until, sampled, skip_without_tritonserver, stub_pids, wait_until
from videoitg.defaults import default_checkpoint
from videoitg.front.process import environment as front_environment
from videoitg.launch import procfs, shm, supervise
from videoitg.launch import server as server_mod
from videoitg.launch.options import STOP_GRACE_S
from videoitg.launch.ports import free_ports
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.launch.triton_command import ADMIN_HEADER

pytestmark = pytest.mark.server

skip_without_tritonserver()

def started(repo: Path, log_dir: Path) -> Iterator[TritonServer]:
    srv = TritonServer(repo, ServerOptions(exit_timeout_s=3), log_path=log_dir / "server.log").start(120)
    yield srv
    srv.stop()


@pytest.fixture()
def repo(tmp_path: Path) -> Path:
    return write_repo(tmp_path / "repo")


@pytest.fixture()
def server(repo: Path, tmp_path: Path) -> Iterator[TritonServer]:
    """A server of its own, for a test that stops, kills or waits on it."""
    yield from started(repo, tmp_path)


@pytest.fixture(scope="module")
def shared_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repo(tmp_path_factory.mktemp("shared") / "repo")


@pytest.fixture(scope="module")
def shared(shared_repo: Path) -> Iterator[TritonServer]:
    """One server for the tests that only send it requests and read its processes (the last two reload `echo` with
    the launcher's key: they come last in this file)."""
    yield from started(shared_repo, shared_repo.parent)


def http(srv: TritonServer, method: str, path: str, body: bytes | None = None,
         headers: dict[str, str] | None = None, internal: bool = False) -> tuple[int, bytes]:
    """A request to the public port (the front), or with `internal` to tritonserver's own port behind it."""
    url = srv.internal_http_url if internal else srv.http_url
    req = urllib.request.Request(f"http://{url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ready(srv: TritonServer) -> bool:
    return http(srv, "GET", "/v2/health/ready")[0] == 200


def infer(srv: TritonServer, model: str = "echo", timeout: float = 60) -> list[float]:
    body = b'{"inputs":[{"name":"X","shape":[2],"datatype":"FP32","data":[1.5,2]}]}'
    req = urllib.request.Request(f"http://{srv.http_url}/v2/models/{model}/infer", data=body)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())["outputs"][0]["data"]


def shm_regions(pids: list[int]) -> set[str]:
    """/dev/shm files mapped by these processes (the python backend's regions), from /proc/PID/maps."""
    found = set()
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
                if "/dev/shm/" in line:
                    found.add(line.split("/dev/shm/", 1)[1].split(" (deleted)")[0])
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# ---- restricted APIs -----------------------------------------------------------------------------------------
EVIL = '''
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        open(MARKER, "w").close()

    def execute(self, requests):
        return []
'''


def test_each_models_code_is_loaded_once_at_a_start(shared: TritonServer, shared_repo: Path) -> None:
    """One stub per model instance: none started only to ask the model to complete its config
    (`--disable-auto-complete-config`; the python backend's default starts two per model, importing torch twice)."""
    assert {m.name: (m / "1" / "imported").read_text() for m in shared_repo.iterdir()} == {
        "echo": "x", "other": "x", "slow": "x"}


def test_key_is_not_written_to_the_log(shared: TritonServer) -> None:
    infer(shared)
    key = shared.admin_headers()[ADMIN_HEADER]
    assert key not in shared.log_tail(10**7)


def test_the_front_runs_with_huge_pages_for_its_large_blocks(shared: TritonServer) -> None:
    environ = Path(f"/proc/{shared.front_pid}/environ").read_bytes().split(b"\0")
    want = front_environment(dict(os.environ))["GLIBC_TUNABLES"]
    assert "glibc.malloc.hugetlb=" in want and f"GLIBC_TUNABLES={want}".encode() in environ



def test_the_front_may_open_as_many_files_as_the_hard_limit_allows(shared: TritonServer) -> None:
    """Its connection caps (HTTP, metrics), gRPC's connections and its pool toward tritonserver together can pass the
    common soft limit of 1024."""
    rows = Path(f"/proc/{shared.front_pid}/limits").read_text().splitlines()
    soft, hard = next(r for r in rows if r.startswith("Max open files")).split()[3:5]
    assert soft == hard or int(soft) == 1 << 20, (soft, hard)


def test_client_cannot_register_the_stubs_shared_memory(shared: TritonServer) -> None:
    """Registering the echo stub's own region and inferring into it crashed tritonserver (signal 11)."""

    regions = shm_regions([shared.pid, *stub_pids(shared).values()])
    assert regions, "the python backend maps its regions from /dev/shm"
    region = sorted(regions)[0]
    code, text = http(shared, "POST", "/v2/systemsharedmemory/region/stub/register",
                      json.dumps({"key": f"/{region}", "offset": 0, "byte_size": 4096}).encode())
    assert code == 404, text
    c = grpc.InferenceServerClient(shared.grpc_url)
    try:
        with pytest.raises(Exception, match="Method not found"):
            c.register_system_shared_memory("stub", f"/{region}", 4096)
        x = grpc.InferInput("X", [2], "FP32")
        x.set_data_from_numpy(np.array([1.5, 2], np.float32))
        assert c.infer("echo", [x]).as_numpy("Y").tolist() == [3.0, 4.0]
    finally:
        c.close()
    assert shared.running and ready(shared)


def test_http_admin_apis_refused_without_the_key(shared: TritonServer, tmp_path: Path) -> None:
    """The public port does not serve them at all, with or without the key; tritonserver's own port, which only the
    launcher knows, refuses them without it."""
    marker = tmp_path / "code-ran"

    # A load whose model.py comes in the request: this ran arbitrary code inside the server before.
    evil = json.dumps({"parameters": {"config": json.dumps({"backend": "python"}),
                                      "file:1/model.py": base64.b64encode(
                                          EVIL.replace("MARKER", repr(str(marker))).encode()).decode()}}).encode()
    refused = {
        "load with sent code": ("POST", "/v2/repository/models/evil/load", evil),
        "unload": ("POST", "/v2/repository/models/echo/unload", b"{}"),
        "repository index": ("POST", "/v2/repository/index", b"{}"),
        "register shared memory": ("POST", "/v2/systemsharedmemory/region/r/register",
                                   json.dumps({"key": "/x", "offset": 0, "byte_size": 64}).encode()),
        "shared memory status": ("GET", "/v2/systemsharedmemory/status", None),
        "cuda shared memory": ("GET", "/v2/cudasharedmemory/status", None),
        "logging": ("POST", "/v2/logging", json.dumps({"log_file": str(tmp_path / "x.log")}).encode()),
        "trace": ("POST", "/v2/trace/setting", json.dumps({"trace_level": ["TIMESTAMPS"]}).encode()),
    }
    for what, (method, path, body) in refused.items():
        code, text = http(shared, method, path, body, shared.admin_headers())
        assert code == 404 and b"is not served" in text, (what, code, text)
        code, text = http(shared, method, path, body, internal=True)
        assert code == 403 and b"restricted" in text, (what, code, text)
    assert not marker.exists()
    assert ready(shared) and infer(shared) == [3.0, 4.0]  # nothing was unloaded
    # Open: inference, health, metadata, config, statistics.
    for path in ("/v2", "/v2/models/echo", "/v2/models/echo/config", "/v2/models/echo/stats"):
        assert http(shared, "GET", path)[0] == 200, path
    # The launcher's own key unlocks them behind the front (the stub watchdog reloads models with it).
    assert http(shared, "POST", "/v2/repository/models/echo/load", b"", shared.admin_headers(), internal=True)[0] == 200


def test_grpc_admin_apis_refused_without_the_key(shared: TritonServer) -> None:

    public, internal = grpc.InferenceServerClient(shared.grpc_url), grpc.InferenceServerClient(shared.internal_grpc_url)
    key = shared.admin_headers("grpc")
    try:
        for c, headers, refusal in ((internal, None, "restricted"), (public, None, "Method not found"),
                                    (public, key, "Method not found")):  # the public port: key or not
            calls = {
                "load": lambda h, c=c: c.load_model("echo", headers=h),
                "unload": lambda h, c=c: c.unload_model("echo", headers=h),
                "index": lambda h, c=c: c.get_model_repository_index(headers=h),
                "register shared memory": lambda h, c=c: c.register_system_shared_memory("r", "/x", 64, headers=h),
                "log settings": lambda h, c=c: c.update_log_settings({"log_info": False}, headers=h),
                "trace settings": lambda h, c=c: c.update_trace_settings(settings={"trace_rate": "1"}, headers=h),
            }
            for what, call in calls.items():
                with pytest.raises(InferenceServerException) as e:
                    call(headers)
                assert refusal in str(e.value), (what, str(e.value))
        assert public.is_server_ready() and public.is_model_ready("echo")
        internal.load_model("echo", headers=key)
    finally:
        public.close()
        internal.close()


# ---- readiness and the stub watchdog ----------------------------------------------------------------------------
def test_readiness_turns_false_when_a_stub_dies_and_the_watchdog_restores_it(server: TritonServer) -> None:
    """Catches: `/v2/health/ready` and the model's ready flag answering 200 for 14-18 s while requests failed.

    Readiness is sampled by its own thread: a request to the dead stub can stay in flight through the whole reload,
    so a single thread that alternates probes and requests may never see the unready window."""
    before = stub_pids(server)["echo"]
    t0 = time.monotonic()
    os.kill(before, signal.SIGKILL)
    failed: list[float] = []  # start times of requests that failed
    with sampled(lambda: ready(server), 0.02) as samples:
        while time.monotonic() - t0 < 60:
            start = time.monotonic()
            try:
                infer(server, timeout=30)
                if any(not r for _, r in samples):  # served after an unready spell: recovered
                    break
            except urllib.error.HTTPError:
                failed.append(start)
            time.sleep(0.05)
    unready = [t for t, r in samples if not r]
    assert unready, f"readiness never turned false after the stub died:\n{server.log_tail()}"
    unready_after = unready[0] - t0
    recovered_after = next(t for t, r in samples if r and t > unready[0]) - t0
    assert unready_after < 6.0, f"still ready {unready_after:.1f} s after the stub died"  # looked at each second
    # Requests fail only while the server is, or is about to be reported, unready: none starts failing after it is
    # ready again.
    assert all(t - t0 < recovered_after for t in failed), (failed, recovered_after)
    assert ready(server) and infer(server) == [3.0, 4.0]
    assert stub_pids(server)["echo"] != before and server.watchdog.restarts == 1
    print(f"stub killed: unready after {unready_after:.2f} s, ready again after {recovered_after:.1f} s")


def test_watchdog_gives_up_after_bounded_tries(repo: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that cannot be reloaded is tried RELOAD_TRIES times with backoff, then left unloaded."""
    monkeypatch.setattr(supervise, "RELOAD_TRIES", 3)
    srv = TritonServer(repo, ServerOptions(exit_timeout_s=3), log_path=tmp_path / "s.log").start(120)
    try:
        write_model(repo, "echo", init="raise RuntimeError('cannot load')")  # every reload now fails
        os.kill(stub_pids(srv)["echo"], signal.SIGKILL)
        t0 = time.monotonic()
        while "echo" not in srv.watchdog.given_up and time.monotonic() - t0 < 60:
            time.sleep(0.2)
        assert srv.watchdog.given_up == {"echo"}, (stub_pids(srv), srv.log_tail())
        took = time.monotonic() - t0
        time.sleep(3)  # nothing more is tried
        log = srv.log_tail(10**7)
        tries = log.count("'echo' cannot answer: its python-backend stub died")
        assert tries == 3, log
        assert took >= 1 + 2, "no backoff between tries"
        assert not ready(srv)  # truthful: the model is gone
        assert infer(srv, "other") == [3.0, 4.0]  # the other models still serve
    finally:
        srv.stop()


# ---- stop with a request in flight ------------------------------------------------------------------------------
def test_stop_with_a_long_request_in_flight_is_bounded_and_leaks_nothing(server: TritonServer) -> None:
    """Catches: SIGKILL after 40 s, UNAVAILABLE for the client, the python backend's /dev/shm regions leaked."""
    pids = [server.pid, *stub_pids(server).values()]
    regions = shm_regions(pids)
    assert regions
    box: dict[str, object] = {}

    def request() -> None:
        try:
            box["answer"] = infer(server, "slow", timeout=120)
        except Exception as e:  # the server goes away under it: an error, not a hang
            box["error"] = e

    th = threading.Thread(target=request)
    th.start()
    started = server.repository / "slow" / "1" / "started"
    assert wait_until(started.exists, 60), "the request did not reach the slow model in 60 s"  # it runs 30 s on
    t0 = time.monotonic()
    server.stop()
    took = time.monotonic() - t0
    th.join(30)
    assert not th.is_alive(), "the in-flight request hung"
    assert "error" in box or "answer" in box
    bound = server.options.exit_timeout_s + STOP_GRACE_S + 2
    assert took < bound, f"stop took {took:.1f} s (bound {bound} s)"
    assert not [p for p in pids if alive(p)], "a server or stub process outlived stop()"
    left = [r for r in regions if (Path("/dev/shm") / r).exists()]
    assert not left, f"leaked shared memory: {left}"


# ---- the launcher's life ----------------------------------------------------------------------------------------
def test_killed_launcher_takes_its_server_down_and_the_ports_come_back(repo: Path) -> None:
    """Catches: kill -9 of `videoitg serve` leaving tritonserver running as an orphan holding the ports, and the next
    `serve` on those ports printed "ready" because the orphan answered."""
    ports = [str(p) for p in free_ports(3)]
    args = ["--model-repository", str(repo), "--http-port", ports[0], "--grpc-port", ports[1],
            "--metrics-port", ports[2]]
    proc = serve(args)
    try:
        lines = read_until(proc, "ready:")
        assert lines[-1].startswith("ready:"), "".join(lines)
        triton = server_child(proc.pid)
        regions = shm_regions([triton])
        proc.kill()  # SIGKILL: the launcher gets no chance to clean up
        proc.wait()
        deadline = time.monotonic() + 30
        while alive(triton) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(triton), "tritonserver outlived its launcher"
        assert not [r for r in regions if (Path("/dev/shm") / r).exists()]
        again = serve(args)
        try:
            lines = read_until(again, "ready:")
            assert lines[-1].startswith("ready:"), "".join(lines)
            again.send_signal(signal.SIGTERM)
            assert again.wait(60) == 0
        finally:
            if again.poll() is None:
                again.kill()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_serve_restarts_a_killed_tritonserver_on_the_same_ports(repo: Path) -> None:
    """A tritonserver that dies (a request that crashed it, an OOM kill) is started again on the same ports instead
    of ending `videoitg serve`, behind the same front: its port stays open and answers 503 naming tritonserver until
    it is back."""
    ports = free_ports(3)
    proc = serve(["--model-repository", str(repo), "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                   "--metrics-port", str(ports[2])])
    srv = TritonServer(repo, ServerOptions())  # for its client helpers only: never started
    srv.http_port = ports[0]
    try:
        lines = read_until(proc, "ready:")
        assert lines[-1].startswith("ready:"), "".join(lines)
        first = server_child(proc.pid)
        front = next(c for c in procfs.children(proc.pid) if c != first)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(urllib.error.HTTPError) as refused:  # tritonserver loads its models again for seconds
            infer(srv)
        assert refused.value.code == 503
        assert "server unavailable: tritonserver did not answer" in json.loads(refused.value.read())["error"]
        log = Path(read_until(proc, "log: ")[-1][5:].strip())
        lines = read_until(proc, "tritonserver ready again")
        out = "".join(lines)
        assert "exited unexpectedly (killed by SIGKILL)" in out and "(restart 1)" in lines[-1], out
        assert server_child(proc.pid) != first and front in procfs.children(proc.pid)
        assert ready(srv) and infer(srv) == [3.0, 4.0]
        # the front answered liveness itself from the launcher's first notice to its second (tests/front/test_lost.py)
        said = ("videoitg front: tritonserver is being started again", "videoitg front: tritonserver is ready")
        assert wait_until(lambda: said[1] in log.read_text(), 10), log.read_text()[-3000:]
        text = log.read_text()
        assert said[0] in text and text.index(said[0]) < text.index(said[1]), text[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_supervision_gives_up_after_bounded_failed_starts(repo: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that can no longer start is tried with backoff, then the supervision ends (no endless loop)."""
    said: list[str] = []
    srv = TritonServer(repo, ServerOptions(stub_watchdog_s=0), log_path=tmp_path / "s.log")
    monkeypatch.setattr(TritonServer, "running", property(lambda self: False))
    monkeypatch.setattr(TritonServer, "restart", lambda self, timeout_s, cancelled=None: (_ for _ in ()).throw(
        server_mod.ServerError("tritonserver exited with code 1 while starting")))
    monkeypatch.setattr(supervise.time, "sleep", lambda s: None)
    policy = supervise.RestartPolicy(max_failed_starts=3)
    assert supervise.supervise(srv, lambda: False, said.append, policy) is False
    assert said[-1].endswith("giving up after 3 failed starts in a row"), said
    assert [x for x in said if "next try in" in x] == [
        "restart 0 failed (tritonserver exited with code 1 while starting); next try in 1 s",
        "restart 0 failed (tritonserver exited with code 1 while starting); next try in 2 s"]


def test_restart_policy_restarts_a_ready_server_every_time() -> None:
    policy = supervise.RestartPolicy()
    assert [policy.after_failed_start() for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, None]
    policy.after_ready()
    assert policy.after_failed_start() == 1.0
    assert supervise.describe_exit(-9) == "killed by SIGKILL" and supervise.describe_exit(1) == "exit code 1"


def test_busy_port_is_reported_before_anything_loads(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        others = free_ports(2)
        t0 = time.monotonic()
        # No --model-repository: the refusal must come before the repository is written or a checkpoint read.
        r = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--repo", str(tmp_path / "repo"),
                            "--http-port", str(others[0]), "--grpc-port", str(port),
                            "--metrics-port", str(others[1])], capture_output=True, text=True, cwd=ROOT,
                           timeout=120)
    assert r.returncode != 0
    assert f"port {port}" in r.stderr and f"pid {os.getpid()}" in r.stderr, r.stderr
    assert "starting tritonserver" not in r.stdout and not (tmp_path / "repo").exists()
    print(f"busy port refused in {time.monotonic() - t0:.1f} s")


def test_a_port_taken_before_tritonserver_binds_it_is_picked_again(repo: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: another process took tritonserver's metrics port between its pick and tritonserver's bind; the
    front answered ready while tritonserver was still starting, and tritonserver then exited ("already in use")."""
    picks = []
    real = server_mod.free_ports

    def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
        picks.append(real(n, host))
        return picks[-1][:2] + [port] if len(picks) == 2 else picks[-1]  # the 2nd pick: tritonserver's own

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        monkeypatch.setattr(server_mod, "free_ports", free_ports)
        with TritonServer(repo, ServerOptions(stub_watchdog_s=0), log_path=tmp_path / "s.log") as srv:
            assert len(picks) == 3 and port not in srv._triton_ports
            assert infer(srv) == [3.0, 4.0]
            assert f"'127.0.0.1:{port}' already in use" in srv.log_tail(100_000)
            assert f"port {port} was taken before tritonserver could bind it" in srv.log_tail(100_000)


# The words tritonserver 2.51 printed as it aborted, and its abort, from a model's initialize: every time, or only the
# first time (a marker beside its model.py).
ABORT = ("import os, sys; m = pathlib.Path(__file__).with_name('aborted'); {once}(m.touch(), "
         "print('terminate called after throwing an instance of \\'boost::interprocess::lock_exception\\'', "
         "file=sys.stderr, flush=True), os.abort())")


def tried_once_more(srv: TritonServer, every_time: bool, said: str) -> None:
    """The abort in the log once, or twice where every start aborted; the launcher's `said` once."""
    log = srv.log_tail(1_000_000)
    assert log.count("lock_exception'") == (2 if every_time else 1), log
    assert log.count(f"aborted while loading models (boost::interprocess::lock_exception); {said}") == 1, log


@pytest.mark.parametrize("every_time", [False, True])
def test_a_start_the_upstream_abort_ended_is_tried_once_more(every_time: bool, tmp_path: Path) -> None:
    """Catches: tritonserver 2.51's python backend now and then aborts with boost::interprocess::lock_exception while
    it loads models (an upstream bug); `videoitg serve` then exited 2 at its start. The start is tried once more, and
    only once."""
    write_model(tmp_path / "repo", "echo", init=ABORT.format(once="" if every_time else "m.exists() or "))
    srv = TritonServer(tmp_path / "repo", ServerOptions(stub_watchdog_s=0), log_path=tmp_path / "s.log")
    try:
        if every_time:
            with pytest.raises(server_mod.ServerError):
                srv.start(120)
        else:
            srv.start(120)
            assert infer(srv) == [3.0, 4.0]
        tried_once_more(srv, every_time, "starting it once more")
    finally:
        srv.stop()


@pytest.mark.parametrize("every_time", [False, True])
def test_a_restart_of_tritonserver_alone_the_upstream_abort_ended_is_tried_once_more_behind_the_front(
        every_time: bool, tmp_path: Path) -> None:
    """Catches: a tritonserver started again alone (it exited; the front keeps its clients' connections) whose start
    tritonserver 2.51's abort ended stopped the whole server, the front too. It is started once more, alone; a
    second abort stops the whole server (the next restart starts both)."""
    later_starts_abort = "s = pathlib.Path(__file__).with_name('started'); " + ABORT.format(
        once="not s.exists() or " + ("" if every_time else "m.exists() or ")) + "; s.touch()"
    write_model(tmp_path / "repo", "echo", init=later_starts_abort)
    srv = TritonServer(tmp_path / "repo", ServerOptions(stub_watchdog_s=0), log_path=tmp_path / "s.log")
    try:
        srv.start(120)
        front = srv._front
        srv._proc.kill()
        srv._proc.wait()
        assert srv.exited == "tritonserver"
        if every_time:
            with pytest.raises(server_mod.ServerError):
                srv.restart(120)
            assert front.poll() is not None and not srv.running
        else:
            srv.restart(120)
            assert srv._front is front and front.poll() is None and infer(srv) == [3.0, 4.0]
        tried_once_more(srv, every_time, "starting it once more, the front keeps running")
    finally:
        srv.stop()


def test_a_foreign_server_on_our_port_is_not_taken_for_ours(repo: Path) -> None:
    """The readiness wait also asks `GET /v2` for the server's name: an orphan tritonserver (or any HTTP server)
    answering 200 on our port must not pass for the one we started with its own `--id`."""

    class Foreign(BaseHTTPRequestHandler):
        name = "triton"

        def do_GET(self) -> None:  # the stdlib's name
            body = json.dumps({"name": self.name, "version": "2.51.0"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        ours = TritonServer(repo, ServerOptions(http_port=httpd.server_address[1]))
        ours.http_port = httpd.server_address[1]
        assert ours._ready(f"http://{ours.http_url}/v2/health/ready")  # it does answer "ready"...
        assert not ours._answered_by_us()  # ...but not as us
        Foreign.name = ours.server_id
        assert ours._answered_by_us()
    finally:
        httpd.shutdown()


def test_serve_refuses_a_bad_checkpoint_with_its_cause(tmp_path: Path) -> None:
    """Catches: Triton's "failed to load all models" after 22 s."""


    ckpt = tmp_path / "ckpt"
    shutil.copytree(default_checkpoint(), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["intermediate_size"] += 8  # every MLP tensor's shape now disagrees with the weights
    (ckpt / "config.json").write_text(json.dumps(cfg))
    ports = free_ports(3)
    r = subprocess.run([sys.executable, "-m", "videoitg", "serve", "--checkpoint", str(ckpt),
                        "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                        "--metrics-port", str(ports[2])], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode != 0
    assert "has shape" in r.stderr, r.stderr
    assert "starting tritonserver" not in r.stdout


def test_stale_leftovers_are_removed_only_for_launchers_known_to_be_gone(tmp_path: Path) -> None:
    """/dev/shm may be shared with another container (a pod's IPC namespace) whose PIDs we cannot see."""
    ns = shm.launcher_tag().partition(".")[0]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    names = {
        "gone": f"{shm.SHM_PREFIX}{ns}.{dead.pid}_ab_1",
        "alive": f"{shm.SHM_PREFIX}{shm.launcher_tag()}_cd_2",
        "other namespace": f"{shm.SHM_PREFIX}1.{dead.pid}_ef_3",
        "not ours": "triton_python_backend_shm_region_4",
    }
    for n in names.values():
        (tmp_path / n).write_bytes(b"x")
    shm.remove_stale_shared_memory(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "gone")
