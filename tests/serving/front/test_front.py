"""The public front (front.py): its policy without a server, and, served, the requests that stopped a bare
tritonserver 2.51 answered while the server keeps serving, and its stop with requests in flight."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.bench_stop import moving_clip
from tests.support.server import metric_value, served, skip_without_tritonserver, wait_until
from tests.support.video import repeat_clip
from videoitg.defaults import sample_video
from videoitg.serving import front, front_main
from videoitg.serving.client import RemoteError, ServedResult, VideoITGClient
from videoitg.serving.protocol import DECODE, GROUNDING, OTHER_INPUTS_BYTES, TOP, VISION, RepoSummary
from videoitg.serving.repository import RepoSpec, build_repository
from videoitg.serving.server import ServerOptions, TritonServer, public_models, request_bounds, unload_s

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


@pytest.mark.parametrize(("given", "want"), [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # an operator's own setting wins
])
def test_the_fronts_environment_asks_for_huge_pages_unless_told_otherwise(given: str | None, want: str) -> None:
    base = {"PATH": "/bin"} | ({"GLIBC_TUNABLES": given} if given is not None else {})
    assert front_main.environment(base) == {"PATH": "/bin", "GLIBC_TUNABLES": want}


def test_the_heap_is_trimmed_once_enough_request_bytes_were_released(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front_main, "TRIM_EVERY_S", 0.01)
    trims = []
    monkeypatch.setattr(front_main, "trim_freed_memory", lambda: trims.append(1) or True)
    budget = front.ByteBudget(1 << 30)

    async def run() -> None:
        task = asyncio.ensure_future(front_main.trim_after_release(budget))
        assert budget.take(front_main.TRIM_BYTES)
        budget.give(front_main.TRIM_BYTES - 1)  # not yet enough released
        await asyncio.sleep(0.05)
        assert trims == [] and budget.high == front_main.TRIM_BYTES
        budget.give(1)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run())
    assert trims == [1] and budget.high == budget.held == 0


def test_refusals_quote_at_most_a_short_prefix() -> None:
    assert len(front.http_route("X" * 10_000, "/v2", MODELS)) < 80
    assert len(front.http_route("GET", "/" + "a" * 10_000, MODELS)) < 200
    assert len(front.http_route("POST", f"/v2/models/{'m' * 256}/infer", MODELS)) < 200


def header(**kw: object) -> bytes:
    return json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1], **kw}]}).encode()


@pytest.mark.parametrize(("body", "length", "why"), [
    (b"{", None, "not valid JSON"),
    (b"\xff\xfe", None, "not valid UTF-8"),
    (b'{"inputs":' + b"[" * 2_000, None, "nests more than"),
    (b'{"inputs": [' + b"[[]]," * 3_000 + b"[[]]]}", None, "more than 4096"),  # counted before the parse
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
    (header(), "-1", "1-10 ASCII digits"),
    (b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}], "outputs": {}}', None, "'outputs'"),
    (b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}], "outputs": [1]}', None, "'outputs'"),
    (b'{"inputs": [{"name": "A", "datatype": "FP32", "shape": [1]}], "parameters": {"x": 1e400}}', None,
     "'x' must be a finite number"),  # Python reads inf, Triton refuses it: one reading
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
    ok.model_version = "3"
    assert front.grpc_infer_error(ok, MODELS) is None
    ok.model_version = "9" * 100_000  # as HTTP's path: a version number, or none
    assert "model_version '999" in front.grpc_infer_error(ok, MODELS)
    ok.model_version = ""
    ok.inputs[0].shape.extend([1] * 1_000_000)  # counted before the shape is copied
    assert "1000002 dimensions" in front.grpc_infer_error(ok, MODELS)


def test_grpc_fields_but_the_raw_contents_are_bounded_before_they_are_parsed() -> None:
    """A message of an input whose shape, contents or parameters hold millions of entries: every field but the raw
    contents is parsed whole, so together they are bounded like the HTTP JSON header; the raw contents are not."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")
    big = service_pb2.ModelInferRequest(model_name=TOP)
    big.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.extend([b""] * 600_000)
    err, head, _ = front.grpc_scan(big.SerializeToString(), MODELS)
    assert err is not None and err.reason == "header_size" and "raw_input_contents" in err and head == b""
    raw = service_pb2.ModelInferRequest(model_name=TOP)
    raw.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    raw.raw_input_contents.append(b"v" * (4 << 20))
    err, head, n_raw = front.grpc_scan(raw.SerializeToString(), MODELS)
    assert err is None and n_raw == 1 and len(head) < 100


def test_the_front_is_bounded_by_the_repository_summary(tmp_path: Path) -> None:
    repo = build_repository(RepoSpec(target="cpu"), tmp_path / "repo")
    summary = RepoSummary.read(repo)
    assert public_models(repo) == (TOP,)
    assert request_bounds(repo, (TOP,)) == (summary.request_bytes_bound(TOP), *summary.signature_bound([TOP]))
    # An operator's own repository (no summary): every model is public, with the served video bound.
    (tmp_path / "own" / "echo").mkdir(parents=True)
    (tmp_path / "own" / "echo" / "config.pbtxt").write_text('backend: "python"\n')
    assert public_models(tmp_path / "own") == ("echo",)
    got_bytes, n_in, n_out = request_bounds(tmp_path / "own", ("echo",))
    assert got_bytes > OTHER_INPUTS_BYTES and n_in == n_out == front.DEFAULT_MAX_TENSORS


# ---- one reading of every request, bounded work (issue 36) --------------------------------------------------
VALID = {"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1]}


def test_a_json_header_over_the_bound_is_refused_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid structure with millions of empty lists in `data` took 13-18 s of `json.loads` on the event loop."""
    body = (b'{"inputs":[{"name":"A","datatype":"FP32","shape":[1],"data":[' + b"[]," * 400_000 + b"[]]}]}")
    assert len(body) > front.MAX_HEADER_BYTES
    monkeypatch.setattr(front, "parse_header", lambda raw: pytest.fail("parsed a header over the bound"))
    err = front.http_infer_error(body, None)
    assert err is not None and err.reason == "header_size" and "binary data" in err
    n = front.json_length(None, len(body))  # what the front checks from Content-Length, before reading the body
    assert isinstance(n, front.Refusal) and n.reason == "header_size"
    assert front.json_length(str(front.MAX_HEADER_BYTES + 1), 1 << 30).reason == "header_size"
    assert front.json_length("100", None) == 100 and front.json_length(None, None) is None


def test_inputs_and_outputs_are_counted_before_any_is_looked_at() -> None:
    many = json.dumps({"inputs": [7] * 100}).encode()
    err = front.http_infer_error(many, None, max_inputs=8)
    assert err is not None and "100 inputs, more than the 8" in err
    outs = json.dumps({"inputs": [VALID], "outputs": [{"name": "X"}] * 20}).encode()
    assert "20 outputs, more than the 12" in front.http_infer_error(outs, None, max_inputs=8, max_outputs=12)
    twice = json.dumps({"inputs": [VALID, VALID]}).encode()
    assert "given twice" in front.http_infer_error(twice, None)
    long_name = json.dumps({"inputs": [{**VALID, "name": "n" * 65_536}]}).encode()
    err = front.http_infer_error(long_name, None)
    assert err is not None and "1-256 characters" in err and len(err) < 200
    deep_shape = json.dumps({"inputs": [{**VALID, "shape": [1] * 100_000}]}).encode()
    assert "dimensions, more than" in front.http_infer_error(deep_shape, None)


@pytest.mark.parametrize(("body", "why"), [
    (b'{"inputs": 5, "inputs": [' + json.dumps(VALID).encode() + b"]}", "'inputs' appears twice"),
    (b'{"inputs": [{"name": "A", "name": "B", "datatype": "FP32", "shape": [1]}]}', "'name' appears twice"),
    (b'{"inputs": [' + json.dumps(VALID).encode() + b'], "parameters": {"timeout": NaN}}', "not valid JSON"),
    (b'{"inputs": [' + json.dumps(VALID).encode() + b'], "parameters": {"x": Infinity}}', "not valid JSON"),
    (json.dumps({"inputs": [VALID], "parameters": {"priority": -1}}).encode(), "'priority' must be a non-negative"),
    (json.dumps({"inputs": [VALID], "parameters": {"timeout": 1.5}}).encode(), "'timeout' must be a non-negative"),
    (json.dumps({"inputs": [VALID], "parameters": {"sequence_id": {}}}).encode(), "'sequence_id' must be"),
    (json.dumps({"inputs": [VALID], "parameters": {"sequence_start": 1}}).encode(), "must be a boolean"),
    (json.dumps({"inputs": [VALID], "parameters": {"custom": [1]}}).encode(), "must be a boolean, a 64-bit"),
    (json.dumps({"inputs": [VALID], "parameters": {"custom": 2**64}}).encode(), "must be a boolean, a 64-bit"),
    (json.dumps({"inputs": [VALID], "parameters": {f"k{i}": 1 for i in range(17)}}).encode(), "17 entries"),
    (json.dumps({"inputs": [VALID], "parameters": []}).encode(), "'parameters' must be a JSON object"),
    (json.dumps({"inputs": [{**VALID, "parameters": {"binary_data_size": -1}}]}).encode(), "'binary_data_size'"),
    (json.dumps({"inputs": [{**VALID, "parameters": {"shared_memory_region": "r"}}]}).encode(), "shared memory"),
    (json.dumps({"inputs": [VALID], "outputs": [{"name": "S", "parameters": {"binary_data": "yes"}}]}).encode(),
     "'binary_data' must be a boolean"),
    (json.dumps({"inputs": [VALID]}).encode("utf-16"), "not valid UTF-8"),
    (b'{"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}',
     "lone surrogate"),
    (b'{"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1], "data": ["\xed\xa0\x80"]}]}',
     "not valid UTF-8"),
])
def test_one_reading_of_every_request(body: bytes, why: str) -> None:
    """Python and tritonserver would read these differently (the last duplicate key against the first, UTF-16,
    NaN, a lone surrogate) or tritonserver answers them with 500: each gets a 400 naming the problem."""
    err = front.http_infer_error(body, None)
    assert err is not None and why in err, err
    assert len(err) < 300


def test_typed_parameters_that_kserve_allows_pass() -> None:
    params = {"priority": 1, "timeout": 0, "sequence_id": "s", "sequence_start": True, "binary_data_output": False,
              "custom_int": -5, "custom_number": 0.5, "custom_text": "x"}
    body = json.dumps({"inputs": [{**VALID, "parameters": {"binary_data_size": 5}}],
                       "outputs": [{"name": "SCORES", "parameters": {"binary_data": True}}],
                       "parameters": params}).encode()
    assert front.http_infer_error(body + b"\x01\x00\x00\x00a", str(len(body))) is None


@pytest.mark.parametrize("length", ["\u00b2", "9" * 4301, "١٢", "+5", " 5", "5 ", ""])
def test_inference_header_length_is_plain_ascii_digits(length: str) -> None:
    """`str.isdigit` takes '²' and Arabic-Indic digits, and `int` refuses 4301 digits: a 500 and a traceback."""
    err = front.http_infer_error(header(), length)
    assert err is not None and "ASCII digits" in err


@pytest.mark.parametrize(("headers", "why"), [
    ([("Content-Length", "5"), ("Content-Length", "5")], "'content-length' is given 2 times"),
    ([("Transfer-Encoding", "chunked"), ("transfer-encoding", "chunked")], "'transfer-encoding'"),
    ([("Content-Encoding", "identity"), ("Content-Encoding", "gzip")], "'content-encoding' is given 2 times"),
    ([("Content-Encoding", "identity, gzip")], "uncompressed"),
    ([("Content-Encoding", "GZIP")], "uncompressed"),
    ([("Inference-Header-Content-Length", "5"), ("Inference-Header-Content-Length", "6")], "given 2 times"),
])
def test_framing_and_encoding_headers_have_one_reading(headers: list[tuple[str, str]], why: str) -> None:
    err = front.framing_error(headers)
    assert err is not None and why in err, err
    assert front.framing_error([("Content-Length", "5"), ("Content-Encoding", "identity"), ("Accept", "a"),
                                ("Accept", "b")]) is None


def test_grpc_counts_come_before_any_input_is_looked_at() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")

    # 3 million empty inputs in 5.7 MiB: parsed whole, 3.3 GB of the front's memory and ~10 s of Python looping.
    nine = service_pb2.ModelInferRequest(model_name=TOP).SerializeToString() + b"\x2a\x00" * 9
    # The scan stops at the 9th input: what follows is never read, not even a field running past the message's end
    # (a whole parse calls that malformed).
    assert "more inputs than the 8" in front.grpc_message_error(nine + b"\x2a\xff\xff\xff\x0f", MODELS, max_inputs=8)
    raw = nine + b"\x2a\x00" * 3_000_000
    tracemalloc.start()
    try:
        err = front.grpc_message_error(raw, MODELS, max_inputs=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err is not None and "more inputs than the 8" in err
    assert peak < 1 << 20, f"{peak >> 10} KiB allocated scanning"
    assert "is not served" in front.grpc_message_error(
        service_pb2.ModelInferRequest(model_name=DECODE).SerializeToString() + b"\x2a\x00", MODELS)
    assert "malformed" in front.grpc_message_error(b"\x2a\x05ab", MODELS)
    named = service_pb2.ModelInferRequest(model_name=TOP).SerializeToString()
    assert "malformed ModelInfer request" in front.grpc_message_error(named + b"\x2a\x02\xff\xff", MODELS)  # the scan
    # passes an input whose bytes protobuf cannot read
    assert "more than" in front.grpc_message_error(b"\x18\x01" * 1_000_000, MODELS)  # any other field, repeated
    assert "no inputs" in front.grpc_message_error(service_pb2.ModelInferRequest(model_name=TOP).SerializeToString(),
                                                  MODELS)
    many = service_pb2.ModelInferRequest(model_name=TOP)
    for _ in range(20):
        many.inputs.add()
    assert "20 inputs, more than the 8" in front.grpc_infer_error(many, MODELS, max_inputs=8)
    extra = service_pb2.ModelInferRequest(model_name=TOP)
    for name in ("VIDEO", "INSTRUCTION"):
        extra.inputs.add(name=name, datatype="BYTES").shape.extend([1, 1])
    extra.raw_input_contents.extend([b"a", b"b", b"c"])
    assert "3 raw_input_contents for 2 inputs" in front.grpc_infer_error(extra, MODELS)
    assert "3 raw_input_contents for 2 inputs" in front.grpc_message_error(extra.SerializeToString(), MODELS)
    del extra.raw_input_contents[2]
    assert front.grpc_infer_error(extra, MODELS) is None
    extra.parameters["sequence_id"].int64_param = 5
    assert front.grpc_message_error(extra.SerializeToString(), MODELS) is None
    err, head, n_raw = front.grpc_scan(extra.SerializeToString(), MODELS)  # the checks parse all but the raw bytes
    parsed = service_pb2.ModelInferRequest.FromString(head)
    assert err is None and n_raw == 2 and not parsed.raw_input_contents
    assert parsed.model_name == TOP and parsed.inputs == extra.inputs and parsed.parameters == extra.parameters
    assert front.grpc_infer_error(parsed, MODELS, n_raw=3) is not None and front.grpc_infer_error(parsed, MODELS,
                                                                                                   n_raw=2) is None
    extra.parameters["priority"].int64_param = -1
    assert "'priority' must be a non-negative" in front.grpc_infer_error(extra, MODELS)
    extra.parameters["priority"].uint64_param = 1
    extra.parameters["x"].double_param = float("nan")
    assert "finite" in front.grpc_infer_error(extra, MODELS)
    del extra.parameters["x"]
    extra.inputs[0].parameters["shared_memory_region"].string_param = "r"
    assert "shared memory" in front.grpc_infer_error(extra, MODELS)
    long_name = service_pb2.ModelInferRequest(model_name=TOP)
    long_name.inputs.add(name="n" * 65_536, datatype="BYTES").shape.extend([1, 1])
    err = front.grpc_infer_error(long_name, MODELS)
    assert err is not None and "1-256 characters" in err and len(err) < 200


def test_error_text_passed_on_is_bounded() -> None:
    long = json.dumps({"error": "unknown input '" + "n" * 65_536 + "'"}).encode()
    out = front.bounded_error_body(long)
    assert len(out) < front.MAX_ERROR_CHARS + 100 and json.loads(out)["error"].startswith("unknown input 'nnn")
    assert front.bounded_error_body(b'{"error": "short"}') == b'{"error": "short"}'
    assert len(front.bounded_error_body(b"x" * 100_000)) < front.MAX_ERROR_CHARS + 100
    assert len(front.bounded_text("y" * 100_000)) < front.MAX_ERROR_CHARS + 10


def test_a_call_past_the_waiting_bound_displaces_the_one_longest_without_a_byte() -> None:
    waiting = front.WaitingCalls(2)
    assert waiting.arrive("a") is None and waiting.arrive("b") is None
    waiting.leave("a")  # its message came: no longer waiting
    assert waiting.arrive("c") is None
    assert waiting.arrive("d") == "b"  # "b" waited longest
    waiting.progress("c")  # bytes of its message arrived: "d" has gone longer without one
    waiting.progress("b")  # a displaced call: not waiting any more
    assert waiting.arrive("e") == "d"
    waiting.leave("b")  # a displaced call ending: nothing to undo
    assert list(waiting.calls) == ["c", "e"]


def test_refusals_carry_a_reason_for_the_counter() -> None:
    counters = front.FrontCounters()
    counters.reject("http", front.http_infer_error(b"{", None))
    counters.reject("http", front.http_route("GET", "/nope", MODELS))
    counters.reject("grpc", front.Refusal("x", "structure"))
    counters.unavailable["http"] += 1
    text = counters.text()
    assert 'videoitg_front_rejected{protocol="http",reason="json"} 1' in text
    assert 'videoitg_front_rejected{protocol="http",reason="route"} 1' in text
    assert 'videoitg_front_rejected{protocol="grpc",reason="structure"} 1' in text
    assert 'videoitg_front_unavailable{protocol="http"} 1' in text


# ---- served ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    skip_without_tritonserver()
    yield from served(RepoSpec(target="cpu"), tmp_path_factory, ServerOptions(exit_timeout_s=10))


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
def test_metrics_page_is_passed_on(server: TritonServer) -> None:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        assert b"nv_inference_request_success" in r.read()
    host, port = server.metrics_url.split("//")[1].split("/")[0].rsplit(":", 1)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://{host}:{port}/v2/health/ready", timeout=10)
    assert e.value.code == 404


def slow_clip(folder: Path, i: int, seed: int) -> bytes:
    """A clip whose cold request takes seconds of decoding: 4 GOPs of 900 frames, each decoded from its keyframe to
    its last sampled frame (on a clip of the encoder's short GOPs, most of 8 cold requests could be answered before
    the stop)."""
    moving_clip(folder / f"s{i}.mp4", seed, gop=900)
    return repeat_clip(folder / f"s{i}.mp4", folder / f"v{i}.mp4", reps=4).read_bytes()


@pytest.mark.server
def test_stop_answers_every_request_in_flight_then_exits(tmp_path_factory: pytest.TempPathFactory,
                                                         tmp_path: Path) -> None:
    """A stop with 8 cold requests in flight (4 HTTP, 4 gRPC) and 2 idle keep-alive connections: every request gets
    its answer, the idle connections are closed, and the server is down a model unload after the last one
    (tritonserver signalled with the front refuses the next step of a gRPC request in flight: "Server not ready")."""
    skip_without_tritonserver()
    videos = [slow_clip(tmp_path, i, seed) for i, seed in enumerate(range(100, 108))]
    gen = served(RepoSpec(target="cpu"), tmp_path_factory, ServerOptions(exit_timeout_s=30))
    srv = next(gen)
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
    with pytest.raises(StopIteration):
        next(gen)  # stops the server, which must exit with 0
    took = time.monotonic() - t0
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
