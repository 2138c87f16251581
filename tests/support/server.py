"""Shared by the tests that start the real tritonserver: skip where none is installed, started servers shared by
the tests of a worker (`SharedServers`, conftest's `shared_servers` and `cpu_server`) or a module's own (`served`),
their metrics and stubs, a reliability report."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import selectors
import subprocess
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from videoitg.launch import binaries, procfs
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec, build_repository
from videoitg.request.limits import Limits


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of `pid` is stopped (state T): a SIGSTOP takes effect thread by thread after kill()
    returns, so a test that needs the process stopped waits for this."""
    try:
        states = [(task / "stat").read_text().rpartition(")")[2].split()[0]
                  for task in Path(f"/proc/{pid}/task").iterdir()]
    except OSError:
        return False
    return bool(states) and all(s in ("T", "t") for s in states)


def ready(server: TritonServer) -> bool:
    """The server's public readiness (`/v2/health/ready` through the front) is 200."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def sampled(probe: Callable[[], bool], every_s: float) -> Iterator[list[tuple[float, bool]]]:
    """(time, `probe()`) every `every_s` from a thread of its own while the block runs: a readiness the block's own
    requests, which may stay in flight through a whole reload, would never see change."""
    samples: list[tuple[float, bool]] = []
    done = threading.Event()

    def run() -> None:
        while not done.is_set():
            samples.append((time.monotonic(), probe()))
            time.sleep(every_s)

    prober = threading.Thread(target=run, daemon=True)
    prober.start()
    try:
        yield samples
    finally:
        done.set()
        prober.join()


def wait_until(done: Callable[[], bool], timeout_s: float, every_s: float = 0.05) -> bool:
    """Polls `done` until it holds or `timeout_s` has passed: whether it held. A test waits on a signal from the
    server this way, not on a fixed pause a loaded machine may not honour."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every_s)
    return True


QUICK_TRIES = 3


def quickest(probe: Callable[[], Any], within_s: float) -> tuple[Any, float]:
    """`probe()`'s result and seconds, tried again (up to QUICK_TRIES times) while it takes `within_s` or more: a
    bound on an answer's time, checked so that one stall of a busy machine is not taken for the server's (a server
    that waits out a longer bound misses it every time)."""
    for _ in range(QUICK_TRIES):
        t0 = time.monotonic()
        got = probe()
        took = time.monotonic() - t0
        if took < within_s:
            break
    return got, took


async def quickest_async(probe: Callable[[], Awaitable[Any]], within_s: float) -> tuple[Any, float]:
    """`quickest` for a coroutine."""
    for _ in range(QUICK_TRIES):
        t0 = time.monotonic()
        got = await probe()
        took = time.monotonic() - t0
        if took < within_s:
            break
    return got, took


async def settled(done: Callable[[], bool], timeout_s: float, every_s: float = 0.02) -> bool:
    """`wait_until` inside an event loop: the loop goes on serving between polls."""
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(every_s)
    return True


def read_until(proc: subprocess.Popen, prefix: str, timeout_s: float = 120) -> list[str]:
    """Whole lines of `proc`'s output up to the first that starts with `prefix` (the last one returned), or up to
    its end ("" last, as readline gives) or `timeout_s`, silent or not (a line the timeout cut is not returned: it
    could look like the one waited for). Read a byte at a time from the pipe itself: nothing past that line is taken
    from a later read (`proc.communicate()`)."""
    lines: list[str] = []
    line = bytearray()
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout.fileno(), selectors.EVENT_READ)
        while (left := deadline - time.monotonic()) > 0 and sel.select(left):
            byte = os.read(proc.stdout.fileno(), 1)
            if not byte:  # the end of its output
                return [*lines, *([line.decode(errors="replace")] if line else []), ""]
            line += byte
            if byte == b"\n":
                lines.append(line.decode(errors="replace").replace("\r\n", "\n"))
                line.clear()
                if lines[-1].startswith(prefix):
                    break
    return lines


def skip_without_tritonserver() -> None:
    """At module level: skip the whole module where no tritonserver is found."""
    try:
        binaries.find_tritonserver()
    except binaries.ServingSetupError as e:  # pragma: no cover - the serve extra is part of [all]
        pytest.skip(f"no tritonserver: {e}", allow_module_level=True)


def start(srv: TritonServer, timeout_s: float = 240) -> TritonServer:
    """`srv.start` with the suite's stall bound (a start the launcher gave up on is the test's failure)."""
    return srv.start(timeout_s=timeout_s)


def launch(spec: RepoSpec, tmp_path_factory: pytest.TempPathFactory,
           options: ServerOptions | None = None) -> TritonServer:
    """A started server on a new repository of `spec`."""
    repo = build_repository(spec, tmp_path_factory.mktemp("repo"))
    srv = TritonServer(repo, options or ServerOptions(), log_path=tmp_path_factory.mktemp("log") / "tritonserver.log")
    return start(srv)


def stopped_cleanly(srv: TritonServer) -> str | None:
    """Stop `srv`: None when tritonserver exited cleanly (exit code 0), else what went wrong, with its log's end."""
    code = srv.stop()
    return None if code == 0 else f"tritonserver did not exit cleanly ({code}):\n{srv.log_tail()}"


def served(spec: RepoSpec, tmp_path_factory: pytest.TempPathFactory,
           options: ServerOptions | None = None) -> Iterator[TritonServer]:
    """For the fixture of a module that stops, restarts, reconfigures or breaks its server (`yield from
    served(...)`): a started server on a new repository of `spec`, its own, which must stop cleanly when the fixture
    ends, unless a test stopped it already (that test checks how: `stopped_cleanly`). A module that only sends
    ordinary requests holds a shared one instead (`SharedServers.hold`)."""
    srv = launch(spec, tmp_path_factory, options)
    yield srv
    if srv.running or srv.exited:  # still up, or exited on its own: not stopped by a test
        failed = stopped_cleanly(srv)
        assert failed is None, failed


# The session server's repository (conftest's `cpu_server`): the CPU bls repository with two small limits that every
# input its users send stays within (above the sample's ~11 KB, a random clip's ~100 KB and every instruction the
# tests send), so tests/client/test_kserve.py checks both limits on it, and a decode step that streams 5 frames a
# chunk, so the sample (24 sampled frames) streams in 5 chunks, the last one short.
CPU_LIMITS = Limits().replace(max_bytes=1 << 20, max_instruction_tokens=32)
CPU_STREAM_FRAMES = 5
CPU_SPEC = RepoSpec(target="cpu", limits=CPU_LIMITS, stream_frames=CPU_STREAM_FRAMES)


class SharedServers:
    """Started servers, one per repository spec, for the tests of one worker (conftest's
    `shared_servers`): `hold` starts one the first time its key is asked for and hands the same running server to
    every later holder; `close` stops them all at the end of the session.

    A holder sends ordinary requests only: it never stops, restarts, reconfigures or breaks the server (a module
    that does keeps its own, `served`), reads its counters as deltas, and sends videos no other holder sends where it
    needs a cold cache. `pytest_collection_modifyitems` in tests/conftest.py runs every holder's tests in one
    worker, so each of these servers starts once in the suite."""

    # At most this many servers run, unless more are held at once: before a start, servers no one holds stop, least
    # recently used first. Each one is tritonserver, the front and four python stubs holding torch and the tiny
    # checkpoint (1.3 GB resident in all, measured); the other worker runs modules with servers of their own at the
    # same time, on a machine that also runs other work. Two: the session server and the one the running module needs.
    MAX_RUNNING = 2

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._servers: OrderedDict[str, TritonServer] = OrderedDict()  # least recently used first
        self._holders: dict[str, int] = {}
        self._failures: list[str] = []

    def hold(self, spec: RepoSpec) -> Iterator[TritonServer]:
        """For a fixture (`yield from shared_servers.hold(spec)`): the running server of this repository spec,
        started on first use. A server that is no longer running when a holder lets go fails that holder's teardown
        and is not handed out again."""
        key = repr(spec)  # every field (a dataclass): equal keys, equal repositories
        if key not in self._servers:
            self._make_room()
            self._servers[key] = launch(spec, self._tmp, ServerOptions())
            self._holders[key] = 0
        srv = self._servers[key]
        self._servers.move_to_end(key)
        self._holders[key] += 1
        yield srv
        if self._servers.get(key) is srv:
            self._holders[key] -= 1
        if not srv.running:
            if self._servers.get(key) is srv:  # the first holder to find it stopped drops it
                del self._servers[key], self._holders[key]
            srv.stop()
            raise AssertionError(f"a shared server stopped while this module held it ({srv.exited}); a module that "
                                 f"stops or breaks its server starts its own (`served`):\n{srv.log_tail()}")

    def _make_room(self) -> None:
        for key in [k for k in self._servers if not self._holders[k]]:
            if len(self._servers) < self.MAX_RUNNING:
                return
            self._stop(key)

    def _stop(self, key: str) -> None:
        srv = self._servers.pop(key)
        del self._holders[key]
        failed = stopped_cleanly(srv)
        if failed:
            self._failures.append(f"{key}: {failed}")

    def close(self) -> None:
        """Stop every server, all at once (each stop mostly waits on tritonserver's unload); each must have exited
        cleanly (those stopped earlier too)."""
        with ThreadPoolExecutor(max(1, len(self._servers))) as pool:
            list(pool.map(self._stop, list(self._servers)))
        assert not self._failures, "\n\n".join(self._failures)


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


@dataclass(frozen=True)
class RawTensor:
    """An input sent as given: any shape and data type, with `data` as its bytes whatever the shape says."""

    shape: tuple[int, ...]
    datatype: str
    data: bytes = b""


class DirectError(Exception):
    """tritonserver refused or failed a direct call: its HTTP status and message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status, self.message = status, message


def _raw(value: np.ndarray | RawTensor) -> RawTensor:
    """A tensor as KServe v2 binary data, as tritonclient writes it."""
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    if isinstance(value, RawTensor):
        return value
    datatype = np_to_triton_dtype(value.dtype)
    data = (b"".join(serialize_byte_tensor(value).reshape(-1).tolist()) if datatype == "BYTES"
            else np.ascontiguousarray(value).tobytes())
    return RawTensor(value.shape, datatype, data)


def direct_infer(server: TritonServer, model: str, inputs: Mapping[str, np.ndarray | RawTensor],
                 outputs: tuple[str, ...] = (), timeout_s: float = 120) -> dict[str, np.ndarray]:
    """One request straight to tritonserver's own HTTP port, past the front, with the inference key only the front
    and the launcher hold: how a test reaches a step the front does not pass on. Inputs go as binary data (a
    `RawTensor` exactly as given); the answer's outputs (`outputs`, else all) come back as arrays by name.
    DirectError when tritonserver answers an error."""
    tensors = {name: _raw(v) for name, v in inputs.items()}
    header = json.dumps({
        "inputs": [{"name": n, "shape": list(t.shape), "datatype": t.datatype,
                    "parameters": {"binary_data_size": len(t.data)}} for n, t in tensors.items()],
        **({"outputs": [{"name": n} for n in outputs]} if outputs else {})}).encode()
    host, _, port = server.internal_http_url.rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request("POST", f"/v2/models/{model}/infer", header + b"".join(t.data for t in tensors.values()),
                     {"Inference-Header-Content-Length": str(len(header)),
                      "Content-Type": "application/octet-stream", **server.inference_headers()})
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    if response.status != 200:
        try:
            message = json.loads(body).get("error", "")
        except ValueError:
            message = body.decode("utf-8", "replace")
        raise DirectError(response.status, message)
    answer = json.loads(body)
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in answer.get("outputs", [])}


def report(name: str, data: dict) -> None:
    out = os.environ.get("VIDEOITG_RELIABILITY_REPORT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=1))


def raw_inputs(m, named: Mapping[str, object]) -> list:
    """Request inputs of tritonclient's module `m` holding these values as they are (name -> value, one each), typed
    as the served model declares them: for sending what `RequestOptions` would refuse to build, to the server."""
    from videoitg.client.kserve import REQUEST

    out = []
    for name, value in named.items():
        spec = REQUEST.input(name)
        arr = np.array([[value]], dtype=spec.numpy)
        t = m.InferInput(name, list(arr.shape), spec.datatype)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def grpc_infer(server: TritonServer, inputs: dict[str, tuple[np.ndarray, str]], model: str = "videoitg"):
    """One gRPC request of raw tensors ((array, Triton datatype) by name): the public model through the front, a step
    straight to tritonserver with the inference key. Raises tritonclient's InferenceServerException."""
    import tritonclient.grpc as grpc

    c = grpc.InferenceServerClient(server.grpc_url if model == "videoitg" else server.internal_grpc_url)
    ins = []
    for name, (arr, dtype) in inputs.items():
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        ins.append(t)
    try:
        return c.infer(model, ins, headers=None if model == "videoitg" else server.inference_headers("grpc"))
    finally:
        c.close()


def grpc_stream_infer(server: TritonServer, inputs: dict[str, tuple[np.ndarray, str]], model: str) -> list:
    """Every answer of a decoupled (streaming) model to one request, in order: results or exceptions."""
    import tritonclient.grpc as grpc

    answers: queue.SimpleQueue = queue.SimpleQueue()
    ins = []
    for name, (arr, dtype) in inputs.items():
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        ins.append(t)
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # a step: behind the front
    got = []
    try:
        c.start_stream(callback=lambda result, error: answers.put(error if error is not None else result),
                       headers=server.inference_headers("grpc"))
        c.async_stream_infer(model, ins, enable_empty_final_response=True)
        while True:
            a = answers.get(timeout=60)
            if not isinstance(a, Exception) and a.get_response().parameters["triton_final_response"].bool_param:
                if a.get_response().outputs:
                    got.append(a)
                return got
            got.append(a)
            if isinstance(a, Exception):
                return got
    finally:
        c.stop_stream()
        c.close()
