"""The served BLS repository when its processes die or stop (a stub killed by its PID, a step stopped with SIGSTOP):
the decode step notices a requester that is gone, a request in flight ends naming the step that could not answer,
readiness tells the truth and the watchdog repairs. The module's own server: its tests kill and stop its stubs."""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from benchmarks.clips import random_clip
from tests.support.server import launch, skip_without_tritonserver, wait_until
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.contract.protocol import DECODE, GROUNDING, TOP, VISION
from videoitg.launch import procfs
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec

pytestmark = pytest.mark.server

skip_without_tritonserver()

small_clip = functools.partial(random_clip, size=48)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """Its own server (16-frame decode chunks). Not required to stop cleanly: a request held by a stub that was
    killed is lost inside tritonserver 2.51, whose stop then reaches its exit timeout."""
    srv = launch(RepoSpec(target="cpu", stream_frames=16), tmp_path_factory, ServerOptions(exit_timeout_s=3))
    yield srv
    srv.stop()


def stub(server: TritonServer, model: str) -> int | None:
    """The pid of `model`'s stub (None while it has none: a reload)."""
    return min(procfs.stub_pids(server.pid).get(model, {0})) or None


def ready(server: TritonServer) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def repaired(server: TritonServer, model: str) -> list[str]:
    return [cause for m, cause in server.watchdog.repaired if m == model]


def test_the_top_level_killed_mid_stream_frees_the_decode_step(server: TritonServer, sample: tuple,
                                                                tmp_path: Path) -> None:
    """Catches: the top-level model's stub killed while the decode step streamed frames to it left the decode step
    blocked for ever in its next send (Triton 2.51 neither cancels the request nor fails the send), so every later
    cold request hung, and once 8 were stuck every new one was refused as overloaded, with health 200 throughout."""
    _, _, instruction = sample
    long_clip = small_clip(tmp_path / "long.mp4", seed=7, seconds=300, fps=2)  # ~300 sampled frames, ~19 chunks
    top, decode = stub(server, TOP), stub(server, DECODE)
    idle = procfs.stubs(server.pid)[DECODE][decode].cpu_s
    lost: dict[str, object] = {}

    def request() -> None:
        with VideoITGClient(server.grpc_url, "grpc", timeout_s=10) as c:
            try:
                lost["result"] = c.score(long_clip, instruction)
            except Exception as e:  # held by the stub that is killed: lost, the client's own bound ends it
                lost["error"] = e

    th = threading.Thread(target=request)
    th.start()
    # Killed once the decode is at work on this request (its CPU time moves), not after a fixed sleep.
    assert wait_until(lambda: procfs.stubs(server.pid)[DECODE][decode].cpu_s > idle + 0.05, 30)
    os.kill(top, signal.SIGKILL)
    t0 = time.monotonic()
    said = f"videoitg_decode: a request ended unanswered: its requester (process {top}) is gone"
    assert wait_until(lambda: said in server.log_tail(1 << 20), 30), server.log_tail()
    noticed = time.monotonic() - t0
    assert wait_until(lambda: bool(repaired(server, TOP)), 30), server.log_tail()
    th.join(30)
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        took = []
        for seed in (11, 12, 13):  # cold requests, one after the other: each decoded by the same decode stub
            t1 = time.monotonic()
            assert c.score(small_clip(tmp_path / f"c{seed}.mp4", seed=seed), instruction).logits
            took.append(round(time.monotonic() - t1, 2))
    assert stub(server, DECODE) == decode and not repaired(server, DECODE)  # neither wedged nor killed
    assert repaired(server, TOP) == ["its python-backend stub died"]
    print(f"top-level stub killed mid-stream: the decode stopped {noticed:.1f} s later; cold requests after it "
          f"took {took} s")


def test_a_stopped_step_is_not_ready_and_its_request_ends_naming_it(server: TritonServer, sample: tuple) -> None:
    """Catches: a step stopped (SIGSTOP) for 12 s with health 200 throughout while its requests failed or hung."""
    path, _, instruction = sample
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        c.score(path, instruction)  # cached: the next request goes straight to the grounding step
        before = stub(server, GROUNDING)
        samples: list[tuple[float, bool]] = []
        done = threading.Event()

        def probe() -> None:
            while not done.is_set():
                samples.append((time.monotonic(), ready(server)))
                time.sleep(0.05)

        prober = threading.Thread(target=probe)
        os.kill(before, signal.SIGSTOP)
        t0 = time.monotonic()
        prober.start()
        try:
            with pytest.raises(RemoteError) as e:
                c.score(path, instruction)
            ended = time.monotonic() - t0
            assert wait_until(lambda: stub(server, GROUNDING) not in (None, before) and ready(server), 60), \
                server.log_tail()
            back = time.monotonic() - t0
        finally:
            done.set()
            prober.join()
            if procfs.stubs(server.pid).get(GROUNDING, {}).get(before):
                os.kill(before, signal.SIGKILL)
        assert "videoitg_grounding: StepUnavailableError" in str(e.value), e.value
        assert "UNAVAILABLE" in str(e.value.status), e.value.status
        assert ended < 10, f"the request on the stopped step ended after {ended:.1f} s"
        unready = [t - t0 for t, r in samples if not r]
        assert unready and unready[0] < 4, f"still ready {unready[:1]} s after the stop"
        assert c.score(path, instruction).logits  # served again
    assert any("stopped" in cause for cause in repaired(server, GROUNDING)), server.watchdog.repaired
    print(f"grounding stopped: its request ended in {ended:.1f} s, not ready after {unready[0]:.1f} s, served again "
          f"after {back:.1f} s")


def test_every_stub_killed_at_once_is_back_within_seconds(server: TritonServer, sample: tuple) -> None:
    """Every python stub SIGKILLed together (an OOM kill of the pod's biggest processes, one after another): the
    watchdog reloads the four models at once; the server is ready and serves again within seconds."""
    path, _, instruction = sample
    before = procfs.stub_pids(server.pid)
    assert {TOP, DECODE, VISION, GROUNDING} <= set(before)
    t0 = time.monotonic()
    for pids in before.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not ready(server), 5), "still ready after every stub was killed"
    unready = time.monotonic() - t0
    assert wait_until(lambda: ready(server), 60), server.log_tail()
    back = time.monotonic() - t0
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        assert c.score(path, instruction).logits
    after = procfs.stub_pids(server.pid)
    assert all(not (after[m] & before[m]) for m in before)  # every model runs a new stub
    assert back < 30, f"ready again only after {back:.1f} s"
    print(f"every stub killed: not ready after {unready:.1f} s, ready again after {back:.1f} s")
