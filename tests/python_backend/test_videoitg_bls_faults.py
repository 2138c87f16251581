"""The served BLS repository when its processes die or stop (a stub killed by its PID, a step stopped with SIGSTOP):
the decode step notices a requester that is gone, a request in flight ends naming what could not answer (the front
answers those the top-level model's process took with it), readiness tells the truth and the watchdog repairs; a
step reloaded after its checkpoint was replaced on disk refuses the new weights. The module's own server: its tests
kill and stop its stubs and change its checkpoint."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from benchmarks.clips import random_clip
from tests.support.checkpoint_files import scale_weights_in_place
from tests.support.compare import assert_results_close
from tests.support.server import launch, metric_value, ready, sampled, skip_without_tritonserver, wait_until
from videoitg.client.kserve import RemoteError, UnavailableError, VideoITGClient
from videoitg.contract.protocol import DECODE, GROUNDING, TOP, VISION
from videoitg.defaults import default_checkpoint
from videoitg.front.lost import LOST
from videoitg.launch import procfs, supervise
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.pipeline.scorer import Scorer
from videoitg.repository.generator import RepoSpec
from videoitg.request.options import RequestOptions

pytestmark = pytest.mark.server

skip_without_tritonserver()

small_clip = functools.partial(random_clip, size=48)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's checkpoint: a copy of the embedded one, which a test replaces on disk."""
    return Path(shutil.copytree(default_checkpoint(), tmp_path_factory.mktemp("served") / "ckpt"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Iterator[TritonServer]:
    """Its own server (16-frame decode chunks). Not required to stop cleanly: a request held by a stub that was
    killed is lost inside tritonserver 2.51, whose stop then reaches its exit timeout."""
    srv = launch(RepoSpec(target="cpu", stream_frames=16, checkpoint=str(checkpoint)), tmp_path_factory,
                 ServerOptions(exit_timeout_s=3))
    yield srv
    srv.stop()


def stub(server: TritonServer, model: str) -> int | None:
    """The pid of `model`'s stub (None while it has none: a reload)."""
    return min(procfs.stub_pids(server.pid).get(model, {0})) or None



def repaired(server: TritonServer, model: str) -> list[str]:
    return [cause for m, cause in server.watchdog.repaired if m == model]


def in_flight(server: TritonServer) -> float:
    """Requests the top-level model is serving (its load gauge)."""
    try:
        return metric_value(server.metrics(), "videoitg_requests_in_flight")
    except OSError:
        return -1.0


def test_the_top_level_killed_mid_stream_frees_the_decode_step(server: TritonServer, sample: tuple,
                                                                tmp_path: Path) -> None:
    """Catches: the top-level model's stub killed while the decode step streamed frames to it left the decode step
    blocked for ever in its next send (Triton 2.51 neither cancels the request nor fails the send), so every later
    cold request hung, and once 8 were stuck every new one was refused as overloaded, with health 200 throughout."""
    _, _, instruction = sample
    long_clip = small_clip(tmp_path / "long.mp4", seed=7, seconds=600, fps=2)  # 512 sampled frames, 32 chunks
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
    # The decode step notices before its next send; a requester that dies during a send leaves that send blocked
    # (Triton 2.51), and the watchdog repairs the decode step as wedged once a request waits for it: then a cold
    # request is sent to wait for it, and must be answered (served, or UNAVAILABLE naming the step) once it is
    # repaired, not left to its client's deadline.
    waited, answered = "none", True
    if not wait_until(lambda: said in server.log_tail(1 << 20), 10):
        def wait_for_the_step() -> None:
            nonlocal waited, answered
            t = time.monotonic()
            try:
                with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
                    c.score(small_clip(tmp_path / "waiter.mp4", seed=10), instruction)
                waited = f"answered in {time.monotonic() - t:.1f} s"
            except Exception as e:
                waited = f"{type(e).__name__} after {time.monotonic() - t:.1f} s: {str(e)[:120]}"
                answered = isinstance(e, UnavailableError) and "videoitg_decode: StepUnavailableError" in str(e)

        waiter = threading.Thread(target=wait_for_the_step)
        waiter.start()
        assert wait_until(lambda: bool(repaired(server, DECODE)), 45), server.log_tail()
        waiter.join(70)
        assert answered and waited != "none", waited
    noticed = time.monotonic() - t0
    assert wait_until(lambda: bool(repaired(server, TOP)), 30), server.log_tail()
    th.join(30)
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        took = []
        for seed in (11, 12, 13):  # cold requests, one after the other: each decoded by one decode stub
            t1 = time.monotonic()
            assert c.score(small_clip(tmp_path / f"c{seed}.mp4", seed=seed), instruction).logits
            took.append(round(time.monotonic() - t1, 2))
    if said in server.log_tail(1 << 20):
        assert stub(server, DECODE) == decode and not repaired(server, DECODE)  # neither wedged nor killed
    else:
        assert repaired(server, DECODE) and all("wedged" in cause for cause in repaired(server, DECODE))
    assert repaired(server, TOP) == ["its python-backend stub died"]
    how = "stopped" if said in server.log_tail(1 << 20) else "was repaired"
    print(f"top-level stub killed mid-stream: the decode {how} {noticed:.1f} s later (the request that waited for "
          f"it: {waited}); cold requests after it took {took} s")


@pytest.fixture(scope="module")
def held_clip(server: TritonServer, sample: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip whose features the server holds: a request for its frames (`FRAMES`) then spends its time decoding
    them in the top-level model's own process (about a second here), so no step streams to that process while it
    holds the request."""
    clip = random_clip(tmp_path_factory.mktemp("held") / "frames.mp4", seed=5, seconds=300, fps=2, size=256)
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        c.score(clip, sample[2])
    return clip


HELD = RequestOptions(top_k=300, frames="jpeg", frame_size=64)  # every sampled frame decoded again


HOLD_TRIES = 3


def held_requests(server: TritonServer, clip: Path, instruction: str, protocols: tuple[str, ...]
                  ) -> tuple[list[threading.Thread], dict[str, tuple[float, BaseException | None]]]:
    """One request of `clip`'s frames per protocol, each in a thread of its own, returned once the top-level model
    holds them all: (the threads, when each ended and how). Each takes well under a second alone; a loaded machine
    may start one thread after the other has ended, so a set that never held all together is sent again (up to
    HOLD_TRIES times)."""
    busy = in_flight(server)
    for _ in range(HOLD_TRIES):
        ended: dict[str, tuple[float, BaseException | None]] = {}

        def request(protocol: str, ended: dict = ended) -> None:
            url = server.grpc_url if protocol == "grpc" else server.http_url
            with VideoITGClient(url, protocol, timeout_s=60) as client:
                try:
                    client.score(clip, instruction, HELD)
                    ended[protocol] = (time.monotonic(), None)
                except Exception as e:
                    ended[protocol] = (time.monotonic(), e)

        threads = [threading.Thread(target=request, args=(protocol,)) for protocol in protocols]
        for th in threads:
            th.start()

        def held_or_ended(ended: dict = ended) -> bool:
            return in_flight(server) == busy + len(protocols) or len(ended) == len(protocols)

        if wait_until(held_or_ended, 30) and not ended:
            return threads, ended
        for th in threads:
            th.join(60)
    raise AssertionError(f"the top-level model never held {len(protocols)} requests at once in {HOLD_TRIES} tries "
                         f"(in flight: {in_flight(server)}; the last ended: {ended})")


def lost_as_said(ended: dict[str, tuple[float, BaseException | None]], t0: float) -> dict[str, float]:
    """Seconds from `t0` to each request's end, each checked to be the front's answer to a request the top-level
    model's process took with it."""
    statuses = {"grpc": "StatusCode.UNAVAILABLE", "http": "503"}
    for protocol, (_, error) in ended.items():
        assert isinstance(error, UnavailableError) and error.status == statuses[protocol], (protocol, error)
        assert str(error).endswith(LOST.format(model=TOP)), error
    return {protocol: round(t - t0, 2) for protocol, (t, _) in ended.items()}


def test_requests_the_top_level_model_held_when_it_died_are_answered_at_once(server: TritonServer, sample: tuple,
                                                                            held_clip: Path) -> None:
    """Catches: requests held by the top-level model's stub when it died were never answered (tritonserver 2.51
    drops them, even once the watchdog has reloaded the model): their clients waited for the front's 300 s bound.
    The front answers them, HTTP and gRPC alike, 503 / UNAVAILABLE naming what happened, counted; the next
    requests are served."""
    instruction = sample[2]
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        t1 = time.monotonic()
        c.score(held_clip, instruction, HELD)
        alone = time.monotonic() - t1
    top, before = stub(server, TOP), server.metrics()
    threads, ended = held_requests(server, held_clip, instruction, ("grpc", "http"))
    os.kill(top, signal.SIGKILL)
    t0 = time.monotonic()
    for th in threads:
        th.join(60)
    answered = lost_as_said(ended, t0)
    assert set(answered) == {"grpc", "http"} and max(answered.values()) < 10, answered
    after = server.metrics()
    for protocol in ("grpc", "http"):
        assert (metric_value(after, "videoitg_front_unavailable", protocol=protocol)
                - metric_value(before, "videoitg_front_unavailable", protocol=protocol)) == 1, protocol
    assert wait_until(lambda: ready(server), 30), server.log_tail()
    for protocol, url in (("grpc", server.grpc_url), ("http", server.http_url)):  # served again, as usual
        with VideoITGClient(url, protocol, timeout_s=60) as c:
            assert c.score(held_clip, instruction).logits
    print(f"top-level stub killed with 2 requests in it (one alone took {alone:.1f} s): answered {answered} s "
          "after the kill")


def test_a_stopped_step_is_not_ready_and_its_request_ends_naming_it(server: TritonServer, sample: tuple) -> None:
    """Catches: a step stopped (SIGSTOP) for 12 s with health 200 throughout while its requests failed or hung."""
    path, _, instruction = sample
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        c.score(path, instruction)  # cached: the next request goes straight to the grounding step
        before = stub(server, GROUNDING)
        os.kill(before, signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            with sampled(lambda: ready(server), 0.05) as samples:
                with pytest.raises(RemoteError) as e:
                    c.score(path, instruction)
                ended = time.monotonic() - t0
                assert wait_until(lambda: stub(server, GROUNDING) not in (None, before) and ready(server), 60), \
                    server.log_tail()
                back = time.monotonic() - t0
        finally:
            if procfs.stubs(server.pid).get(GROUNDING, {}).get(before):
                os.kill(before, signal.SIGKILL)
        assert "videoitg_grounding: StepUnavailableError" in str(e.value), e.value
        assert "UNAVAILABLE" in str(e.value.status), e.value.status
        assert ended < 20, f"the request on the stopped step ended after {ended:.1f} s"  # 1.0 s measured; it hung
        unready = [t - t0 for t, r in samples if not r]
        assert unready and unready[0] < 8, f"still ready {unready[:1]} s after the stop"  # 1.1 s measured; 12 s+ broken
        assert c.score(path, instruction).logits  # served again
    assert any("stopped" in cause for cause in repaired(server, GROUNDING)), server.watchdog.repaired
    print(f"grounding stopped: its request ended in {ended:.1f} s, not ready after {unready[0]:.1f} s, served again "
          f"after {back:.1f} s")


def test_a_request_the_decode_step_held_when_its_stub_died_is_answered(server: TritonServer, sample: tuple,
                                                                        tmp_path: Path) -> None:
    """Catches: a request the streamed decode step had taken (its `execute` returned, the video decoding in the
    step's pool) was never answered once the stub died: tritonserver 2.51 does not answer a decoupled instance's
    requests when its stub dies, nor once the model is loaded again, so its client waited for its own deadline. The
    top-level model hears of the repair (`contract.repairs`) and answers it UNAVAILABLE naming the step."""
    # 1,200 frames to decode for 512 sampled ones (~32 chunks): still decoding when the poll below sees it start, on
    # a loaded machine too
    long_clip = small_clip(tmp_path / "long.mp4", seed=8, seconds=600, fps=2)
    decode = stub(server, DECODE)
    idle = procfs.stubs(server.pid)[DECODE][decode].cpu_s
    ended: list[tuple[float, BaseException | None]] = []

    def request() -> None:
        with VideoITGClient(server.grpc_url, "grpc", timeout_s=40) as c:
            try:
                c.score(long_clip, sample[2])
                ended.append((time.monotonic(), None))
            except Exception as e:
                ended.append((time.monotonic(), e))

    th = threading.Thread(target=request)
    th.start()
    assert wait_until(lambda: procfs.stubs(server.pid)[DECODE][decode].cpu_s > idle + 0.05, 30)
    os.kill(decode, signal.SIGKILL)
    t0 = time.monotonic()
    th.join(45)
    assert ended, "no answer within 45 s"
    took, error = round(ended[0][0] - t0, 1), ended[0][1]
    assert isinstance(error, RemoteError) and "UNAVAILABLE" in str(error.status), error
    assert "videoitg_decode: StepUnavailableError" in str(error), error
    assert took < 20, took  # a look after the repair, not its client's 40 s
    assert wait_until(lambda: bool(repaired(server, DECODE)) and ready(server), 60), server.log_tail()
    print(f"decode stub killed mid-decode: its request answered after {took} s ({str(error)[:110]})")


def test_every_stub_killed_at_once_is_back_within_seconds(server: TritonServer, sample: tuple,
                                                           held_clip: Path) -> None:
    """Every python stub SIGKILLed together (an OOM kill of the pod's biggest processes, one after another): the
    watchdog reloads the four models at once; the server is ready and serves again within seconds, and the request
    in flight is answered at once (it waited for the front's 300 s bound)."""
    path, _, instruction = sample
    before = procfs.stub_pids(server.pid)
    assert {TOP, DECODE, VISION, GROUNDING} <= set(before)
    threads, ended = held_requests(server, held_clip, instruction, ("grpc",))
    t0 = time.monotonic()
    for pids in before.values():
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: not ready(server), 15), "still ready after every stub was killed"  # 0.8-1.0 s measured
    unready = time.monotonic() - t0
    threads[0].join(60)
    answered = lost_as_said(ended, t0)["grpc"]
    assert answered < 10, f"the request in flight was answered {answered} s after the kill"
    assert wait_until(lambda: ready(server), 60), server.log_tail()
    back = time.monotonic() - t0
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        assert c.score(path, instruction).logits
    after = procfs.stub_pids(server.pid)
    assert all(not (after[m] & before[m]) for m in before)  # every model runs a new stub
    assert back < 60, f"ready again only after {back:.1f} s"  # 5-16 s measured (four reloads on 2 shared cores)
    print(f"every stub killed: not ready after {unready:.1f} s, the request in flight answered after {answered} s, "
          f"ready again after {back:.1f} s")


def test_a_step_reloaded_after_its_checkpoint_changed_refuses_the_new_weights(
        server: TritonServer, checkpoint: Path, sample: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: after new weights were written over the served checkpoint, a step reloaded by the watchdog loaded
    them while the top-level model's feature cache still keyed features by the old identity, so a cache hit paired
    old features with the new model. The repository pins the identity: each reload is refused naming the checkpoint,
    cached features are only ever scored by the weights that made them, and the files put back are served again."""
    monkeypatch.setattr(supervise, "RELOAD_TRIES", 8)  # the test puts the files back before the watchdog gives up
    path, _, instruction = sample
    scorer = Scorer(checkpoint)  # the weights the server loaded
    weights = checkpoint / "model.safetensors"
    original = weights.read_bytes()
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        c.score(path, instruction)  # its features cached
        scale_weights_in_place(weights)
        refused = "changed on disk since this server's repository was built"
        for step in (VISION, GROUNDING):
            os.kill(stub(server, step), signal.SIGKILL)
            assert wait_until(lambda s=step: f"repairing '{s}' failed" in server.log_tail(1 << 20), 60), \
                server.log_tail()
            assert refused in server.log_tail(1 << 20) and str(checkpoint) in server.log_tail(1 << 20)
            assert not ready(server)
            if step == VISION:  # the grounding step still serves the weights that made the cached features
                cached = c.infer(path, instruction)
                assert cached.cache_hit
                assert_results_close(cached.result, scorer.score(path, instruction))
                with pytest.raises(RemoteError, match=VISION):  # a cold video: no vision step to compute it
                    c.score(small_clip(tmp_path / "cold.mp4", seed=21), instruction)
        with pytest.raises(RemoteError, match=GROUNDING):  # old features are never scored by the new weights
            c.score(path, instruction)
        with weights.open("r+b") as f:  # the files as the repository was built for them
            f.write(original)
        assert wait_until(lambda: ready(server), 120), server.log_tail()
        again = c.infer(path, instruction)
    assert again.cache_hit
    assert_results_close(again.result, scorer.score(path, instruction))
    assert {VISION, GROUNDING} <= {m for m, _ in server.watchdog.repaired}
    said = next(line for line in server.log_tail(1 << 20).splitlines() if refused in line)
    print(f"checkpoint replaced, vision and grounding killed: each reload refused ({said[:400]}); cold requests "
          f"refused, the cached one scored by the old weights, then refused with the grounding step down; put back, "
          f"served again")
