"""The front in front of a real tritonserver 2.51: the requests that stopped a bare tritonserver answered while the
server keeps serving, the metrics page, its counters, and a stop with requests in flight."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clips import repeat_clip
from benchmarks.serving.bench_stop import moving_clip
from tests.support.server import (
    all_threads_stopped,
    metric_value,
    quickest,
    served,
    skip_without_tritonserver,
    stopped_cleanly,
    wait_until,
)
from videoitg.client.kserve import RemoteError, ServedResult, VideoITGClient
from videoitg.contract.protocol import DECODE, GROUNDING, TOP, VISION, RepoSummary
from videoitg.front.config import INFER_KEY_HEADER
from videoitg.launch.options import unload_s
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec
from videoitg.synthetic.sample import sample_video

OVERFLOW = [1, 2**27, 2**35, 1]  # 2^64 bytes of FP32: 0 in Triton 2.51's int64 size check
VALID = {"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1]}


def header(**kw: object) -> bytes:
    return json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1], **kw}]}).encode()



# ---- served ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """The module's own server. The last test stops it with requests in flight (the exit timeout leaves them time)
    and checks how it exited."""
    skip_without_tritonserver()
    yield from served(RepoSpec(target="cpu"), tmp_path_factory, ServerOptions(exit_timeout_s=60))


def serves(server: TritonServer) -> bool:
    """Ready, and an ordinary request is answered."""
    path, instruction = sample_video()
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        return c.is_ready() and len(c.score(path, instruction).logits) > 0


def raw_http(server: TritonServer, request: bytes, chunks: tuple[bytes, ...] = ()) -> bytes:
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(request)
        for c in chunks:
            s.sendall(c)
        return s.recv(4096)


@pytest.mark.server
def test_internal_steps_cannot_be_reached_and_overflowing_shapes_are_refused(server: TritonServer) -> None:
    import grpc  # the serve extra, here and below: the policy tests above run without it
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        for model in (DECODE, VISION, GROUNDING, TOP):
            req = service_pb2.ModelInferRequest(model_name=model)
            f = req.inputs.add(name="FEATURES", datatype="FP32")
            f.shape.extend(OVERFLOW)
            req.raw_input_contents.append(b"")
            with pytest.raises(grpc.RpcError) as e:
                stub.ModelInfer(req, timeout=10)
            want = grpc.StatusCode.INVALID_ARGUMENT if model == TOP else grpc.StatusCode.NOT_FOUND
            assert e.value.code() == want, (model, e.value.details())
        # Read-only information of every model stays open (an ensemble's client, perf_analyzer, reads its steps').
        assert stub.ModelReady(service_pb2.ModelReadyRequest(name=GROUNDING), timeout=10).ready
        assert stub.ModelConfig(service_pb2.ModelConfigRequest(name=DECODE), timeout=10).config.name == DECODE
    for model in (DECODE, VISION, GROUNDING):
        req = urllib.request.Request(f"http://{server.http_url}/v2/models/{model}/infer", data=header(shape=OVERFLOW))
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 404 and b"is not served" in e.value.read()
    assert serves(server)
    assert server.running and server.restarts == 0


@pytest.mark.server
def test_deep_nesting_and_many_chunks_are_answered_and_the_server_keeps_serving(server: TritonServer) -> None:
    body = b'{"inputs":' + b"[" * 4_000  # under MAX_CONTAINERS: parsed, and refused for its depth
    head = f"POST /v2/models/{TOP}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_http(server, (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 400") and b"nests more than" in answer, answer
    answer = raw_http(server, (head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      (b"1\r\n[\r\n" * 1_500_000, b"0\r\n\r\n"))
    assert answer.startswith(b"HTTP/1.1 413") and b"binary data" in answer, answer  # a JSON header over 1 MiB
    answer = raw_http(server, (head + "Content-Length: 9\r\n\r\n").encode() + b'{"inputs"')
    assert answer.startswith(b"HTTP/1.1 400") and b"not valid JSON" in answer, answer
    too_big = RepoSummary.read(server.repository).request_bytes_bound(TOP) + 1
    answer = raw_http(server, (head + f"Content-Length: {too_big}\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413") and b"--max-video-bytes" in answer, answer
    assert serves(server)
    assert server.running and server.restarts == 0


@pytest.mark.server
def test_a_stopped_tritonserver_is_reported_not_live_and_not_ready_within_a_second(server: TritonServer) -> None:
    """tritonserver stopped (SIGSTOP) answers nothing: the front answers health and readiness (HTTP and gRPC) not
    live, not ready within 1 s, a Kubernetes probe's bound; once it runs again, so does every request."""
    import grpc  # the serve extra
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    took: dict[str, tuple[object, float]] = {}
    os.kill(server.pid, signal.SIGSTOP)
    try:
        assert wait_until(lambda: all_threads_stopped(server.pid), 10), "tritonserver did not stop"
        for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{TOP}/ready"):
            def http_probe(path: str = path) -> object:
                with pytest.raises(urllib.error.HTTPError) as e:
                    urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=10)
                return e.value.code

            took[path] = quickest(http_probe, 1.0)
        with grpc.insecure_channel(server.grpc_url) as ch:
            grpc.channel_ready_future(ch).result(timeout=10)  # the bound is the call's, not the connection's
            stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
            for name, call in (("ServerLive", lambda: stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10)),
                               ("ServerReady", lambda: stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10))):
                def grpc_probe(call=call) -> object:
                    with pytest.raises(grpc.RpcError) as g:
                        call()
                    return g.value.code().name

                took[name] = quickest(grpc_probe, 1.0)
    finally:
        os.kill(server.pid, signal.SIGCONT)
    assert all(code in (503, "UNAVAILABLE") and s < 1.0 for code, s in took.values()), took
    assert wait_until(server.is_ready, 30) and serves(server)


@pytest.mark.server
def test_tritonserver_takes_an_inference_only_with_the_key_the_front_holds(server: TritonServer) -> None:
    """No other local process can call a model on tritonserver's own ports: a step called there without the key
    the front holds is refused (HTTP 403, gRPC UNAVAILABLE), and 40 decode requests streamed straight at the step
    are all refused before any is queued, so an ordinary request through the front is answered meanwhile. The key
    reaches the front in its environment, not on its command line, and is written to no log."""
    import tritonclient.grpc as g  # the serve extra
    from tritonclient.utils import InferenceServerException

    for model in (DECODE, VISION):
        req = urllib.request.Request(f"http://{server.internal_http_url}/v2/models/{model}/infer", data=header())
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 403 and b"restricted" in e.value.read(), model
    video = g.InferInput("VIDEO", [1, 1], "BYTES")
    video.set_data_from_numpy(np.array([[sample_video()[0].read_bytes()]], dtype=object))
    with g.InferenceServerClient(server.internal_grpc_url) as c:
        for model in (DECODE, VISION):
            with pytest.raises(InferenceServerException, match="restricted"):
                c.infer(model, [video], client_timeout=30)
        with pytest.raises(InferenceServerException) as e:  # with the key: the step's own answer (not its input)
            c.infer(VISION, [video], headers=server.inference_headers("grpc"), client_timeout=60)
        assert "restricted" not in str(e.value) and "VIDEO" in str(e.value), e.value
    def decodes() -> float:  # requests the decode step took, answered or failed
        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            page = r.read().decode()
        return sum(metric_value(page, m, model=DECODE) for m in ("nv_inference_request_success",
                                                                  "nv_inference_request_failure"))

    before = decodes()
    answers: queue.SimpleQueue = queue.SimpleQueue()
    c = g.InferenceServerClient(server.internal_grpc_url)
    try:
        c.start_stream(callback=lambda result, error: answers.put(error))
        for _ in range(40):
            with contextlib.suppress(InferenceServerException):  # the stream ended by its refusal
                c.async_stream_infer(DECODE, [video])
        refused = answers.get(timeout=30)
    finally:
        c.stop_stream(cancel_requests=True)
        c.close()
    assert refused is not None and "restricted" in str(refused), refused
    time.sleep(1.0)
    assert decodes() == before, "a decode request reached the step without the key"
    assert serves(server)
    key = server.inference_headers()[INFER_KEY_HEADER]
    assert key.encode() not in Path(f"/proc/{server.front_pid}/cmdline").read_bytes()
    assert key.encode() in Path(f"/proc/{server.front_pid}/environ").read_bytes()
    assert key not in server.log_tail(10**7)


@pytest.mark.server
def test_metrics_page_is_passed_on(server: TritonServer) -> None:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert b"nv_inference_request_success" in r.read()
    host, port = server.metrics_url.split("//")[1].split("/")[0].rsplit(":", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=10)
    assert e.value.code == 404


@pytest.mark.server
def test_ambiguous_and_malformed_requests_get_400_naming_the_problem(server: TritonServer) -> None:
    """Each of these reached tritonserver, which answered 500 (or OK, ignoring the extra raw content)."""
    import grpc  # the serve extra, as above
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    valid = json.dumps({"inputs": [VALID]}).encode()
    head = f"POST /v2/models/{TOP}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    cases = [
        (b'{"inputs": 5, "inputs": [' + json.dumps(VALID).encode() + b"]}", "", b"appears twice"),
        (json.dumps({"inputs": [VALID], "parameters": {"priority": -1}}).encode(), "", b"'priority'"),
        (json.dumps({"inputs": [VALID]}).encode("utf-16"), "", b"not valid UTF-8"),
        (valid, "Inference-Header-Content-Length: \u00b2\r\n", b"ASCII digits"),
        (valid, "Content-Encoding: identity\r\nContent-Encoding: gzip\r\n", b"given 2 times"),
        # tritonserver answered 500 "Unable to parse JSON bytes array"
        (json.dumps({"inputs": [{**VALID, "data": [{"a": 1}]}]}).encode(), "", b"input 'INSTRUCTION': 'data'"),
    ]
    for body, extra, why in cases:
        request = (head + extra + f"Content-Length: {len(body)}\r\n\r\n").encode("utf-8") + body
        answer = raw_http(server, request)
        assert answer.startswith(b"HTTP/1.1 400") and why in answer, answer[:300]
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name=TOP)
        for name in ("VIDEO_DIGEST", "INSTRUCTION"):
            req.inputs.add(name=name, datatype="BYTES").shape.extend([1, 1])
        req.raw_input_contents.extend([b"\x01\x00\x00\x00a"] * 3)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "3 raw_input_contents" in e.value.details()
        long_name = service_pb2.ModelInferRequest(model_name=TOP)
        long_name.inputs.add(name="n" * 65_536, datatype="BYTES").shape.extend([1, 1])
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(long_name, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(e.value.details()) < 300
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        page = r.read().decode()
    assert 'videoitg_front_rejected{protocol="http",reason="json"}' in page
    assert 'videoitg_front_rejected{protocol="grpc",reason="structure"}' in page
    assert serves(server)
    assert server.running and server.restarts == 0


@pytest.mark.server
def test_the_clients_faults_are_counted_rejected_not_failure(server: TritonServer) -> None:
    """`videoitg_requests{outcome="failure"}` is what an alert fires on: a client's empty instruction or non-video
    upload is `rejected` by its reason, in the model; a request the front refuses, in the front's counter."""
    def counts() -> tuple[float, float, float, float]:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
            m = r.read().decode()
        return (metric_value(m, "videoitg_requests", model=TOP, outcome="failure"),
                metric_value(m, "videoitg_requests", model=TOP, outcome="rejected", reason="InputError"),
                metric_value(m, "videoitg_requests", model=TOP, outcome="rejected"),  # by any reason
                metric_value(m, "videoitg_front_rejected", protocol="http", reason="route"))

    before = counts()
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        with pytest.raises(RemoteError, match="instruction is empty"):
            c.infer(b"\x00" * 4096, " ")
        with pytest.raises(RemoteError):
            c.infer(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64, "a red circle")
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://{server.http_url}/v2/repository/index", timeout=10)
    deadline = time.monotonic() + 10
    while (got := tuple(a - b for a, b in zip(counts(), before, strict=True))) != (0, 1, 2, 1) and \
            time.monotonic() < deadline:
        time.sleep(0.1)
    assert got == (0, 1, 2, 1), got


def slow_clip(folder: Path, i: int, seed: int) -> bytes:
    """A clip whose cold request takes seconds of decoding: 4 GOPs of 900 frames, each decoded from its keyframe to
    its last sampled frame (on a clip of the encoder's short GOPs, most of the cold requests could be answered before
    the stop)."""
    moving_clip(folder / f"s{i}.mp4", seed, gop=900)
    return repeat_clip(folder / f"s{i}.mp4", folder / f"v{i}.mp4", reps=4).read_bytes()


@pytest.mark.server
def test_stop_answers_every_request_in_flight_then_exits(server: TritonServer, tmp_path: Path) -> None:
    """A stop with 4 cold requests in flight (2 HTTP, 2 gRPC) and 2 idle keep-alive connections: every request gets
    its answer, the idle connections are closed, and the server is down a model unload after the last one
    (tritonserver signalled with the front refuses the next step of a gRPC request in flight: "Server not ready").
    It stops the module's server: the last test of the file."""
    videos = [slow_clip(tmp_path, i, seed) for i, seed in enumerate(range(100, 104))]
    srv = server
    host, port = srv.http_url.rsplit(":", 1)
    idle = []
    for _ in range(2):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle.append(s)
    got: dict[int, object] = {}
    answered_at: dict[int, float] = {}
    connected = threading.Barrier(len(videos) + 1)

    def call(i: int) -> None:
        url, protocol = (srv.http_url, "http") if i < len(videos) // 2 else (srv.grpc_url, "grpc")
        try:
            # One call with the bytes (not a digest first, then the bytes: a stop between the two calls refuses
            # the second), on a connection made before any request is sent (on a busy machine one made late met a
            # listener already closed by the stop).
            with VideoITGClient(url, protocol, timeout_s=120, digest_first_bytes=1 << 62) as c:
                assert c.is_ready()
                connected.wait(60)
                time.sleep(0.05 * i)  # gRPC last: queued behind the HTTP requests, they are in flight longest
                got[i] = c.infer(videos[i], f"when does box {i} move?")
        except Exception as e:  # what a client got is the finding
            got[i] = e
        answered_at[i] = time.monotonic()

    def in_model() -> float:
        with urllib.request.urlopen(srv.metrics_url, timeout=10) as r:
            return metric_value(r.read().decode(), "videoitg_requests_in_flight", model=TOP)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(videos))]
    for t in threads:
        t.start()
    connected.wait(60)
    # every request sent and taken (there are no others): in the model, or answered already (`got` read first: one
    # answered between the two reads is missed by both, never counted twice)
    assert wait_until(lambda: len(got) + in_model() >= len(videos), 60), \
        f"{in_model():.0f} of {len(videos)} requests in the model after 60 s; answered: {got}"
    t0 = time.monotonic()
    failed_stop = stopped_cleanly(srv)  # the server must exit with 0
    took = time.monotonic() - t0
    assert failed_stop is None, failed_stop
    for t in threads:
        t.join(60)
    for s in idle:
        s.settimeout(1)
        assert s.recv(4096) == b"", "an idle keep-alive connection outlived the stop"
        s.close()
    failed = {i: f"{type(r).__name__}: {r}" for i, r in got.items() if not isinstance(r, ServedResult)}
    assert len(got) == len(videos) and not failed, failed
    after = sorted(round(answered_at[i] - t0, 1) for i in answered_at if answered_at[i] > t0)
    assert len(after) >= 2, f"too few requests were in flight at the stop (answered after it: {after})"
    # the front answers the last one, then tritonserver unloads its models
    assert took < after[-1] + unload_s(srv.options) < srv.options.exit_timeout_s, (took, after)
