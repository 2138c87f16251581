"""The public front (videoitg/serving/front.py): what it passes on to tritonserver and what it answers itself.

The policy functions are tested without a server; the served tests send, through the public ports, the requests
that stopped a bare tritonserver 2.51 (a direct call to an internal step with a shape whose byte size overflows, a
body nested a million levels deep, a body in a million and a half one-byte chunks) and check each is answered and
the server keeps serving."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.support.server import served, skip_without_tritonserver
from videoitg.serving import front
from videoitg.serving.front import request_bytes_bound
from videoitg.serving.repository import DECODE, GROUNDING, TOP, VISION, RepoSpec
from videoitg.serving.server import ServerOptions

MODELS = (TOP,)
OVERFLOW = [1, 2**27, 2**35, 1]  # 2^64 bytes of FP32: 0 in Triton 2.51's int64 size check
DEEP = [[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]  # 17 levels, in a request that nests 4 more


# ---- policy ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "want"), [
    ("GET", "/v2", ("pass", "/v2")),
    ("GET", "/v2/health/ready", ("pass", "/v2/health/ready")),
    ("GET", f"/v2/models/{TOP}", ("pass", f"/v2/models/{TOP}")),
    ("GET", f"/v2/models/{TOP}/versions/1/config", ("pass", f"/v2/models/{TOP}/versions/1/config")),
    ("GET", f"/v2/models/{TOP}/stats", ("pass", f"/v2/models/{TOP}/stats")),
    ("GET", f"/v2/models/{DECODE}/stats", ("pass", f"/v2/models/{DECODE}/stats")),  # read-only: every model
    ("GET", f"/v2/models/{VISION}/config", ("pass", f"/v2/models/{VISION}/config")),
    ("POST", f"/v2/models/{TOP}/infer", ("infer", f"/v2/models/{TOP}/infer")),
])
def test_http_route_passes_the_public_api(method: str, path: str, want: tuple[str, str]) -> None:
    assert front.http_route(method, path, MODELS) == want


@pytest.mark.parametrize(("method", "path"), [
    ("POST", f"/v2/models/{DECODE}/infer"), ("POST", f"/v2/models/{VISION}/config"),
    ("POST", f"/v2/models/{GROUNDING}/versions/1/infer"), ("POST", "/v2/repository/index"),
    ("POST", f"/v2/repository/models/{TOP}/unload"), ("GET", "/v2/systemsharedmemory/status"),
    ("POST", "/v2/cudasharedmemory/region/r/register"), ("POST", "/v2/logging"), ("POST", "/v2/trace/setting"),
    ("GET", f"/v2/models/{TOP}/infer"), ("POST", "/v2/health/ready"),
    ("POST", f"/v2/models/{TOP}/../{DECODE}/infer"), ("POST", f"/v2/models/{TOP}/infer/x"),
    ("GET", "/metrics"), ("GET", "/"),
])
def test_http_route_refuses_everything_else(method: str, path: str) -> None:
    assert isinstance(front.http_route(method, path, MODELS), str)


def test_refusals_quote_at_most_a_short_prefix() -> None:
    assert len(front.http_route("X" * 10_000, "/v2", MODELS)) < 80
    assert len(front.http_route("GET", "/" + "a" * 10_000, MODELS)) < 200
    assert len(front.http_route("POST", f"/v2/models/{'m' * 256}/infer", MODELS)) < 200


def header(**kw) -> bytes:  # type: ignore[no-untyped-def]
    return json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1], **kw}]}).encode()


@pytest.mark.parametrize(("body", "length", "why"), [
    (b"{", None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid JSON"),
    (b'{"inputs":' + b"[" * 100_000, None, "nests more than"),
    (json.dumps({"inputs": [{"name": "A", "datatype": "FP32", "shape": [1], "data": DEEP}]}).encode(), None,
     "nests more than"),
    (b"[]", None, "JSON object"),
    (b'{"inputs": 5}', None, "non-empty 'inputs'"),
    (b'{"inputs": [7]}', None, "inputs[0] must be an object"),
    (b'{"inputs": [{"name": 1, "datatype": "FP32", "shape": [1]}]}', None, "string 'name'"),
    (header(shape=[1, "2"]), None, "list of integers"),
    (header(shape=[1, True]), None, "list of integers"),
    (header(shape=[1, -3]), None, "negative"),
    (header(shape=OVERFLOW), None, "2^40 elements"),
    (header(shape=[10**4000, 2]), None, "2^40 elements"),
    (header(), "99999", "not a length within the body"),
    (header(), "-1", "not a length within the body"),
    (b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}], "outputs": {}}', None, "'outputs'"),
    (b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}], "outputs": [1]}', None, "'outputs'"),
])
def test_http_infer_body_refusals_name_the_problem(body: bytes, length: str | None, why: str) -> None:
    err = front.http_infer_error(body, length)
    assert err is not None and why in err, err
    assert len(err) < 300  # never an echo of the body


def test_http_infer_body_accepts_a_real_request() -> None:
    body = header() + b"\x05\x00\x00\x00video"
    assert front.http_infer_error(body, str(len(header()))) is None
    assert front.http_infer_error(header(), None) is None


def test_compressed_bodies_are_refused() -> None:
    assert front.encoding_error(None) is None and front.encoding_error("identity") is None
    for enc in ("gzip", "deflate", "br", "x" * 500):
        err = front.encoding_error(enc)
        assert err is not None and "uncompressed" in err and len(err) < 120


def test_grpc_infer_refusals() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")

    req = service_pb2.ModelInferRequest(model_name=DECODE)
    assert "is not served" in front.grpc_infer_error(req, MODELS)
    req = service_pb2.ModelInferRequest(model_name=TOP)
    req.inputs.add(name="VIDEO", datatype="BYTES").shape.extend(OVERFLOW)
    assert "2^40 elements" in front.grpc_infer_error(req, MODELS)
    ok = service_pb2.ModelInferRequest(model_name=TOP)
    ok.inputs.add(name="VIDEO", datatype="BYTES").shape.extend([1, 1])
    assert front.grpc_infer_error(ok, MODELS) is None


def test_request_bound_follows_the_repository(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / TOP).mkdir()
    (tmp_path / TOP / "config.pbtxt").write_text('max_batch_size: 8\nparameters {\n  key: "MAX_VIDEO_BYTES"\n'
                                                 '  value { string_value: "1000" }\n}\n')
    assert request_bytes_bound(tmp_path, TOP) == 8 * 1000 + front.OTHER_INPUTS_BYTES


# ---- served ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):  # type: ignore[no-untyped-def]
    skip_without_tritonserver()
    yield from served(RepoSpec(target="cpu"), tmp_path_factory, ServerOptions(exit_timeout_s=10))


def serves(server) -> bool:  # type: ignore[no-untyped-def]
    """Ready, and an ordinary request is answered."""
    from videoitg.defaults import sample_video
    from videoitg.serving.client import VideoITGClient

    path, instruction = sample_video()
    with VideoITGClient(server.grpc_url, "grpc", timeout_s=60) as c:
        return c.is_ready() and len(c.score(path, instruction).logits) > 0


def raw_http(server, request: bytes, chunks: list[bytes] = ()) -> bytes:  # type: ignore[no-untyped-def]
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(request)
        for c in chunks:
            s.sendall(c)
        return s.recv(4096)


@pytest.mark.server
def test_internal_steps_cannot_be_reached_and_overflowing_shapes_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    import grpc
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
def test_deep_nesting_and_many_chunks_are_answered_and_the_server_keeps_serving(server) -> None:  # type: ignore[no-untyped-def]
    body = b'{"inputs":' + b"[" * 1_000_000
    head = f"POST /v2/models/{TOP}/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer = raw_http(server, (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    assert answer.startswith(b"HTTP/1.1 400") and b"nests more than" in answer, answer
    answer = raw_http(server, (head + "Transfer-Encoding: chunked\r\n\r\n").encode(),
                      [b"1\r\n[\r\n" * 1_500_000, b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 400"), answer
    answer = raw_http(server, (head + "Content-Length: 9\r\n\r\n").encode() + b'{"inputs"')
    assert answer.startswith(b"HTTP/1.1 400") and b"not valid JSON" in answer, answer
    too_big = request_bytes_bound(server.repository, TOP) + 1
    answer = raw_http(server, (head + f"Content-Length: {too_big}\r\n\r\n").encode())
    assert answer.startswith(b"HTTP/1.1 413") and b"--max-video-bytes" in answer, answer
    assert serves(server)
    assert server.running and server.restarts == 0


@pytest.mark.server
def test_metrics_page_is_passed_on(server) -> None:  # type: ignore[no-untyped-def]
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert b"nv_inference_request_success" in r.read()
    host, port = server.metrics_url.split("//")[1].split("/")[0].rsplit(":", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=10)
    assert e.value.code == 404


@pytest.mark.server
def test_stop_with_idle_keep_alive_connections_is_prompt(tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    """Idle keep-alive HTTP connections do not hold the stop: tritonserver 2.51 alone waits out its whole exit
    timeout while any is open."""
    skip_without_tritonserver()
    gen = served(RepoSpec(target="cpu"), tmp_path_factory, ServerOptions(exit_timeout_s=15))
    srv = next(gen)
    host, port = srv.http_url.rsplit(":", 1)
    idle = []
    for _ in range(4):
        s = socket.create_connection((host, int(port)), timeout=10)
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        idle.append(s)
    t0 = time.monotonic()
    with pytest.raises(StopIteration):
        next(gen)  # stops the server, which must exit with 0
    took = time.monotonic() - t0
    for s in idle:
        s.close()
    assert took < 10, f"stop took {took:.1f} s with idle keep-alive connections open"

