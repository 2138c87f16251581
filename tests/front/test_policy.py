"""The front's policy (policy.py), without a server: the routes of the HTTP port, one reading of every inference
request's JSON header, its bounds, and the refusals' reasons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from videoitg.contract.protocol import DECODE, GROUNDING, OTHER_INPUTS_BYTES, TOP, VISION, RepoSummary
from videoitg.front import config, policy
from videoitg.front.policy import Reason
from videoitg.launch.front_process import public_models, request_bounds
from videoitg.repository.generator import RepoSpec, build_repository

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
    assert policy.http_route(method, path, MODELS) == want


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
    assert isinstance(policy.http_route(method, path, MODELS), str)


def test_refusals_quote_at_most_a_short_prefix() -> None:
    assert len(policy.http_route("X" * 10_000, "/v2", MODELS)) < 80
    assert len(policy.http_route("GET", "/" + "a" * 10_000, MODELS)) < 200
    assert len(policy.http_route("POST", f"/v2/models/{'m' * 256}/infer", MODELS)) < 200


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
    err = policy.http_infer_error(body, length)
    assert err is not None and why in err, err
    assert len(err) < 300  # never an echo of the body


def test_http_infer_body_accepts_a_real_request() -> None:
    body = header() + b"\x05\x00\x00\x00video"
    assert policy.http_infer_error(body, str(len(header()))) is None
    assert policy.http_infer_error(header(), None) is None


def test_compressed_bodies_are_refused() -> None:
    assert policy.encoding_error(None) is None and policy.encoding_error("identity") is None
    for enc in ("gzip", "deflate", "br", "x" * 500):
        err = policy.encoding_error(enc)
        assert err is not None and "uncompressed" in err and len(err) < 120


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
    assert got_bytes > OTHER_INPUTS_BYTES and n_in == n_out == policy.DEFAULT_MAX_TENSORS


# ---- one reading of every request, bounded work -----------------------------------------------------------------
VALID = {"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1]}


def test_a_json_header_over_the_bound_is_refused_before_it_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A valid structure with millions of empty lists in `data` took 13-18 s of `json.loads` on the event loop."""
    body = (b'{"inputs":[{"name":"A","datatype":"FP32","shape":[1],"data":[' + b"[]," * 400_000 + b"[]]}]}")
    assert len(body) > policy.MAX_HEADER_BYTES
    monkeypatch.setattr(policy, "parse_header", lambda raw: pytest.fail("parsed a header over the bound"))
    err = policy.http_infer_error(body, None)
    assert err is not None and err.reason is Reason.HEADER_SIZE and "binary data" in err
    n = policy.json_length(None, len(body))  # what the front checks from Content-Length, before reading the body
    assert isinstance(n, policy.Refusal) and n.reason is Reason.HEADER_SIZE
    assert policy.json_length(str(policy.MAX_HEADER_BYTES + 1), 1 << 30).reason is Reason.HEADER_SIZE
    assert policy.json_length("100", None) == 100 and policy.json_length(None, None) is None


def test_inputs_and_outputs_are_counted_before_any_is_looked_at() -> None:
    many = json.dumps({"inputs": [7] * 100}).encode()
    err = policy.http_infer_error(many, None, max_inputs=8)
    assert err is not None and "100 inputs, more than the 8" in err
    outs = json.dumps({"inputs": [VALID], "outputs": [{"name": "X"}] * 20}).encode()
    assert "20 outputs, more than the 12" in policy.http_infer_error(outs, None, max_inputs=8, max_outputs=12)
    twice = json.dumps({"inputs": [VALID, VALID]}).encode()
    assert "given twice" in policy.http_infer_error(twice, None)
    long_name = json.dumps({"inputs": [{**VALID, "name": "n" * 65_536}]}).encode()
    err = policy.http_infer_error(long_name, None)
    assert err is not None and "1-256 characters" in err and len(err) < 200
    deep_shape = json.dumps({"inputs": [{**VALID, "shape": [1] * 100_000}]}).encode()
    assert "dimensions, more than" in policy.http_infer_error(deep_shape, None)


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
    err = policy.http_infer_error(body, None)
    assert err is not None and why in err, err
    assert len(err) < 300


def test_typed_parameters_that_kserve_allows_pass() -> None:
    params = {"priority": 1, "timeout": 0, "sequence_id": "s", "sequence_start": True, "binary_data_output": False,
              "custom_int": -5, "custom_number": 0.5, "custom_text": "x"}
    body = json.dumps({"inputs": [{**VALID, "parameters": {"binary_data_size": 5}}],
                       "outputs": [{"name": "SCORES", "parameters": {"binary_data": True}}],
                       "parameters": params}).encode()
    assert policy.http_infer_error(body + b"\x01\x00\x00\x00a", str(len(body))) is None


@pytest.mark.parametrize("length", ["\u00b2", "9" * 4301, "١٢", "+5", " 5", "5 ", ""])
def test_inference_header_length_is_plain_ascii_digits(length: str) -> None:
    """`str.isdigit` takes '²' and Arabic-Indic digits, and `int` refuses 4301 digits: a 500 and a traceback."""
    err = policy.http_infer_error(header(), length)
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
    err = policy.framing_error(headers)
    assert err is not None and why in err, err
    assert policy.framing_error([("Content-Length", "5"), ("Content-Encoding", "identity"), ("Accept", "a"),
                                ("Accept", "b")]) is None


def test_error_text_passed_on_is_bounded() -> None:
    long = json.dumps({"error": "unknown input '" + "n" * 65_536 + "'"}).encode()
    out = policy.bounded_error_body(long)
    assert len(out) < policy.MAX_ERROR_CHARS + 100 and json.loads(out)["error"].startswith("unknown input 'nnn")
    assert policy.bounded_error_body(b'{"error": "short"}') == b'{"error": "short"}'
    assert len(policy.bounded_error_body(b"x" * 100_000)) < policy.MAX_ERROR_CHARS + 100
    assert len(policy.bounded_text("y" * 100_000)) < policy.MAX_ERROR_CHARS + 10


def test_refusals_carry_a_reason_for_the_counter() -> None:
    counters = config.FrontCounters()
    counters.reject("http", policy.http_infer_error(b"{", None))
    counters.reject("http", policy.http_route("GET", "/nope", MODELS))
    counters.reject("grpc", policy.Refusal("x", Reason.STRUCTURE))
    counters.reject("grpc", policy.Refusal("the server is stopping", Reason.STOPPING))  # not the client's fault
    counters.unavailable["http"] += 1
    text = counters.text()
    assert 'videoitg_front_rejected{protocol="http",reason="json"} 1' in text
    assert 'videoitg_front_rejected{protocol="http",reason="route"} 1' in text
    assert 'videoitg_front_rejected{protocol="grpc",reason="structure"} 1' in text
    assert 'videoitg_front_unavailable{protocol="http"} 1' in text
    assert "stopping" not in text and "None" not in text


def test_each_reason_is_answered_with_one_http_status_and_one_grpc_code() -> None:
    """Both ports answer a refusal from its reason: a model not served is 404 and NOT_FOUND, a method not served 404
    and UNIMPLEMENTED, both counted `route`; sizes 413 and RESOURCE_EXHAUSTED; a stop 503 and UNAVAILABLE."""
    model = policy.http_route("POST", f"/v2/models/{DECODE}/infer", MODELS)
    path = policy.http_route("GET", "/v2/repository/index", MODELS)
    assert isinstance(model, policy.Refusal) and isinstance(path, policy.Refusal)
    assert (model.reason.http, model.reason.grpc, model.reason.label) == (404, policy.GrpcCode.NOT_FOUND, "route")
    assert (path.reason.http, path.reason.grpc, path.reason.label) == (404, policy.GrpcCode.UNIMPLEMENTED, "route")
    assert (Reason.TOO_LARGE.http, Reason.TOO_LARGE.grpc) == (413, policy.GrpcCode.RESOURCE_EXHAUSTED)
    assert (Reason.STOPPING.http, Reason.STOPPING.grpc, Reason.STOPPING.label) == (503, policy.GrpcCode.UNAVAILABLE,
                                                                                    None)
    assert all(r.http in (400, 401, 404, 408, 413, 417, 503) for r in Reason)


def tensor(datatype: str, shape: list[int], data: object, name: str = "INSTRUCTION") -> bytes:
    return json.dumps({"inputs": [{"name": name, "datatype": datatype, "shape": shape, "data": data}]}).encode()


@pytest.mark.parametrize(("body", "why"), [
    (tensor("BYTES", [1, 1], [{"a": 1}]), "input 'INSTRUCTION': 'data' of datatype BYTES holds an object"),
    (tensor("BYTES", [1, 1], [[5]]), "holds a number"),
    (tensor("BYTES", [1, 2], [["a", None]]), "holds a null"),
    (tensor("BOOL", [2], [True, 1], "B"), "input 'B': 'data' of datatype BOOL holds a number"),
    (tensor("INT8", [1], [-129], "I"), "an integer of INT8 in [-128, 127]"),
    (tensor("INT32", [1], [2**31], "I"), "INT32 in [-2147483648, 2147483647]"),
    (tensor("UINT8", [1], [-1], "I"), "UINT8 in [0, 255]"),
    (tensor("UINT64", [1], [2**64], "I"), "UINT64 in [0, 18446744073709551615]"),
    (tensor("INT64", [1], [1.5], "I"), "holds a number that is not an integer"),
    (tensor("INT64", [1], [True], "I"), "holds a boolean"),
    (tensor("FP32", [1], [1e39], "F"), "a finite number of FP32"),
    (b'{"inputs": [{"name": "F", "datatype": "FP64", "shape": [1], "data": [1e400]}]}', "a finite number of FP64"),
    (tensor("FP32", [1], ["1"], "F"), "holds a string"),
    (tensor("FP16", [1], [1.0], "F"), "FP16 data cannot be sent as JSON: send it as binary data"),
    (tensor("STRING", [1], ["a"]), "datatype 'STRING' is not one of"),
    (tensor("BYTES", [1, 2], ["a"]), "'data' has 1 element, its shape [1, 2] holds 2"),
    (tensor("INT32", [2, 2], [[1, 2], [3]], "I"), "'data' has 3 elements, its shape [2, 2] holds 4"),
])
def test_each_data_element_fits_its_datatype(body: bytes, why: str) -> None:
    """JSON `data` that tritonserver 2.51 reads as something else: it answers 500 to an object in BYTES data
    ("Unable to parse JSON bytes array") and to too few elements ("Shape does not match"), and silently wraps an
    integer out of its type's range. Each is 400 naming the input."""
    err = policy.http_infer_error(body, None)
    assert err is not None and why in err and err.reason is Reason.DATA, err
    assert len(err) < 300


def test_data_that_fits_its_datatype_passes() -> None:
    fits = [tensor("BYTES", [1, 1], [["when does the dog jump?"]]), tensor("BYTES", [1, 1], "one string"),
            tensor("BOOL", [2], [True, False], "B"), tensor("INT8", [2], [-128, 127], "I"),
            tensor("UINT64", [1], [2**64 - 1], "I"), tensor("INT64", [2, 1], [[-(2**63)], [2**63 - 1]], "I"),
            tensor("FP32", [3], [1, -2.5, 3.4e38], "F"), tensor("FP64", [1], [1e308], "F"),
            tensor("INT32", [0], [], "I")]
    for body in fits:
        assert policy.http_infer_error(body, None) is None, body


def test_checking_data_is_bounded_by_the_header() -> None:
    """The most elements a 1 MiB header holds (one digit each) are checked, the count against the shape first."""
    n = (policy.MAX_HEADER_BYTES - 200) // 2

    def compact(shape: list[int]) -> bytes:
        return json.dumps({"inputs": [{"name": "I", "datatype": "INT64", "shape": shape, "data": [7] * n}]},
                          separators=(",", ":")).encode()

    assert len(compact([n])) <= policy.MAX_HEADER_BYTES and policy.http_infer_error(compact([n]), None) is None
    err = policy.http_infer_error(compact([n + 1]), None)
    assert err is not None and f"'data' has {n} elements, its shape [{n + 1}] holds {n + 1}" in err, err
