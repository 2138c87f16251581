"""What a client may reach through the front, checked by pure functions (unit-tested without a server): the routes
of the HTTP port, the bounds of a request, one reading of its JSON header, and `Refusal`, why a request is refused,
with its `Reason`: the counter's label, the HTTP status and the gRPC code it is answered with, in one table.

tritonserver listens on loopback ports that only the launcher knows. The front listens on the public HTTP, gRPC and
metrics ports and passes on what the public API allows: health, server metadata, every model's metadata, readiness,
config and statistics (read-only; the metrics page names every model anyway), inference of the public models, and
the metrics page. Everything else, inference of an internal step and the model-repository, shared-memory, logging and
trace APIs, is answered by the front (HTTP 404, gRPC UNIMPLEMENTED or NOT_FOUND) and never reaches Triton. With the
page on (webpage.py, docs/page.md), GET and HEAD of `/` and its two files are the front's own answers too.

Each inference request has one reading, checked before it is passed on (a refusal's text names the problem, its
reason labels the front's `videoitg_front_rejected` counter):
- its size is bounded (HTTP 413, gRPC RESOURCE_EXHAUSTED), and so is its JSON header (`MAX_HEADER_BYTES`: videos
  travel as binary data or by reference; gRPC: every field but raw_input_contents), refused before anything is
  parsed, and so are the JSON header's objects and lists (`MAX_CONTAINERS`);
- HTTP: framing and encoding headers appear once (`SINGLE_HEADERS`), no content encoding but identity (refused
  before the body is read: these checks would read compressed bytes that Triton inflates; the front itself
  inflates nothing), `Inference-Header-Content-Length` is plain ASCII digits; the JSON header is UTF-8 without lone
  surrogates, has no duplicate keys (Python would read the last, Triton the first), nests at most `MAX_JSON_DEPTH`
  levels and has the structure of a KServe v2 inference request, its `parameters` typed as KServe v2 and Triton
  define them (400 naming what is wrong; Triton 2.51 answers some malformed bodies with 500 and is killed by a deeply
  nested one);
- at most as many inputs and outputs as the public models' signatures declare (the repository summary), counted
  before any of them is looked at (gRPC, `grpc_policy.py`: and one `raw_input_contents` per input when any);
- every input's shape has at most `MAX_ELEMENTS` elements (a shape whose byte size overflows passes Triton 2.51's
  size check and aborts the python-backend stub before any model code runs);
- an input's JSON `data` has as many elements as its shape and each fits its datatype (`data_error`).
A body reaches Triton whole, with a Content-Length: Triton 2.51 overflows its stack decoding a body sent in many
small chunks (CVE-2025-23310 / CVE-2025-23311).

With API keys (`--api-key-file`), every request but health and the page's own files needs one (`key_exempt_http`,
`key_exempt_grpc`); `key_outcome` is the one check of both protocols, and a missing and a wrong key get the same
refusal (`KEY_REFUSAL`: HTTP 401, gRPC UNAUTHENTICATED) by the same path.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Container, Iterable, Sequence
from enum import Enum, IntEnum
from typing import Any

from videoitg.contract.access import KeyStore, bearer
from videoitg.errors import MAX_ERROR_CHARS, bounded_text
from videoitg.jsonio import nesting_over, no_constant

MAX_JSON_DEPTH = 16  # an inference request's JSON nests 4 levels (object, inputs, input, data), plus data's dims
MAX_ELEMENTS = 1 << 40  # per input; far beyond any real request, far below an int64 byte-size overflow
# The JSON header of an HTTP inference request: names, shapes, parameters and small inline values (an instruction
# at its 64 KiB bound, even in JSON's six-byte escapes, fits). A gRPC request's fields but its raw contents, too.
MAX_HEADER_BYTES = 1 << 20
# Objects and lists in a JSON header, counted as '[' and '{' bytes before it is parsed (a real request has a few per
# input): nested empty lists are the most parsing and checking that 1 MiB can ask for.
MAX_CONTAINERS = 4096
MAX_DIMS = 8  # dimensions of one input's shape (the served inputs have 2: batch and 1)
MAX_PARAMETERS = 16  # entries of one `parameters` object
MAX_PARAMETER_CHARS = 4096  # a string parameter's length
DEFAULT_MAX_TENSORS = 64  # inputs and outputs of a request when the launcher names no signature bound
# Headers that frame or encode a request: two of one are two readings of it (aiohttp and Triton pick differently).
SINGLE_HEADERS = ("content-length", "transfer-encoding", "content-encoding", "content-type",
                  "inference-header-content-length", "expect")
_NAME = r"[A-Za-z0-9_.-]{1,256}"
_NAME_RE = re.compile(_NAME)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON's escape of a UTF-16 surrogate, paired or not
_DIGITS = re.compile(r"[0-9]{1,10}")  # plain ASCII: str.isdigit() also takes '²' and other scripts' digits
_MODEL_PATH = re.compile(rf"/v2/models/(?P<model>{_NAME})(?:/versions/(?P<version>[0-9]{{1,19}}))?"
                         r"(?P<action>/infer|/ready|/config|/stats)?")
LIVE_PATH = "/v2/health/live"
_SERVER_PATHS = ("/v2", LIVE_PATH, "/v2/health/ready")
_HEALTH_PATH = re.compile(rf"/v2/health/(?:live|ready)|/v2/models/{_NAME}(?:/versions/[0-9]{{1,19}})?/ready")
INT64_MAX = (1 << 63) - 1


class GrpcCode(IntEnum):
    """gRPC status codes (grpc/doc/statuscodes.md) the front answers with."""

    OK = 0
    CANCELLED = 1
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class Reason(Enum):
    """Why the front refused a request: `label` names it on the `videoitg_front_rejected` counter (None: not the
    client's fault, not counted), `http` is the HTTP status and `grpc` the gRPC code both ports answer it with.
    Some are refused on one port only (`syntax`, `flood`, `stalled`, `read_timeout` end a connection or a call)."""

    ROUTE = ("route", 404, GrpcCode.UNIMPLEMENTED)  # a path, method or gRPC method not served
    MODEL = ("route", 404, GrpcCode.NOT_FOUND)  # inference of a model not served, or a malformed version
    STRUCTURE = ("structure", 400, GrpcCode.INVALID_ARGUMENT)
    PARAMETERS = ("parameters", 400, GrpcCode.INVALID_ARGUMENT)
    JSON = ("json", 400, GrpcCode.INVALID_ARGUMENT)
    DATA = ("data", 400, GrpcCode.INVALID_ARGUMENT)  # JSON `data` that does not fit its input's datatype or shape
    FRAMING = ("framing", 400, GrpcCode.INVALID_ARGUMENT)
    EXPECT = ("framing", 417, GrpcCode.INVALID_ARGUMENT)  # an Expect header other than 100-continue
    ENCODING = ("encoding", 400, GrpcCode.UNIMPLEMENTED)
    HEADER_SIZE = ("header_size", 413, GrpcCode.RESOURCE_EXHAUSTED)
    TOO_LARGE = ("too_large", 413, GrpcCode.RESOURCE_EXHAUSTED)
    OVERLOADED = ("overloaded", 503, GrpcCode.RESOURCE_EXHAUSTED)
    STALLED = ("stalled", 503, GrpcCode.RESOURCE_EXHAUSTED)
    BODY_TIMEOUT = ("body_timeout", 408, GrpcCode.DEADLINE_EXCEEDED)
    ABANDONED = ("abandoned", 400, GrpcCode.CANCELLED)
    CONNECTIONS = ("connections", 503, GrpcCode.UNAVAILABLE)
    SYNTAX = ("syntax", 400, GrpcCode.INVALID_ARGUMENT)
    FLOOD = ("flood", 400, GrpcCode.RESOURCE_EXHAUSTED)
    READ_TIMEOUT = ("read_timeout", 408, GrpcCode.CANCELLED)
    STOPPING = (None, 503, GrpcCode.UNAVAILABLE)  # the server is stopping: retry elsewhere
    API_KEY = ("api_key", 401, GrpcCode.UNAUTHENTICATED)  # no key, or not one of the server's: the same answer

    def __init__(self, label: str | None, http: int, grpc: GrpcCode):
        self.label, self.http, self.grpc = label, http, grpc


class Refusal(str):
    """Why a request is refused: the text the client gets, and `reason`, its `Reason`."""

    reason: Reason

    def __new__(cls, text: str, reason: Reason) -> Refusal:
        r = super().__new__(cls, text)
        r.reason = reason
        return r


class KeyOutcome(Enum):
    """What a request's key was: the `outcome` label of `videoitg_front_api_key`."""

    ACCEPTED = "accepted"
    MISSING = "missing"
    WRONG = "wrong"


# The one answer to a missing and to a wrong key, word for word.
KEY_REFUSAL = Refusal("this server wants an API key: send the header Authorization: Bearer <key> (gRPC: authorization "
                      "metadata)", Reason.API_KEY)


def key_outcome(authorization: Sequence[str], keys: KeyStore) -> KeyOutcome:
    """A request's `Authorization` values (each one given; gRPC: its `authorization` metadata) against the server's
    keys. The presented key, or "" when there is none, is compared with every key either way (`KeyStore.accepts`),
    so a missing and a wrong key take the same time; a value given twice is not accepted (one reading)."""
    key = bearer(authorization[0]) if len(authorization) == 1 else None
    accepted = keys.accepts(key or "")
    if accepted and key is not None:
        return KeyOutcome.ACCEPTED
    return KeyOutcome.MISSING if not authorization else KeyOutcome.WRONG


def key_exempt_http(method: str, path: str, pages: Container[str]) -> bool:
    """Whether an HTTP request needs no key: liveness and readiness (the server's and a model's, `is_health`: a
    probe holds no secret) and the page's own files (the page's calls carry the key its user types)."""
    return (method == "GET" and is_health(path)) or (method in ("GET", "HEAD") and path in pages)


def http_route(method: str, path: str, models: tuple[str, ...]) -> tuple[str, str] | Refusal:
    """('pass' | 'infer', path to send Triton) for an allowed HTTP request, else the reason it is refused. The path
    sent on is rebuilt from what was matched, so an encoded or doubled segment cannot name another model."""
    method = method[:16]
    if path in _SERVER_PATHS:
        return ("pass", path) if method == "GET" else Refusal(f"{method} {path} is not served (GET only)", Reason.ROUTE)
    m = _MODEL_PATH.fullmatch(path)
    if m is None:
        return Refusal(f"{method} {path[:80] or '(no path)'} is not served: this server answers health, metadata and "
                       f"inference of {', '.join(models)}", Reason.ROUTE)
    action = m["action"] or ""
    # Every model's metadata, readiness, config and statistics are read-only (an ensemble's client, perf_analyzer,
    # reads its steps'; the metrics page names them anyway); inference is the public models' only.
    if action == "/infer" and (err := model_error(m["model"], models)) is not None:
        return err
    want = "POST" if action == "/infer" else "GET"
    if method != want:
        return Refusal(f"{method} {path} is not served ({want} only)", Reason.ROUTE)
    version = f"/versions/{m['version']}" if m["version"] else ""
    return ("infer" if action == "/infer" else "pass"), f"/v2/models/{m['model']}{version}{action}"


def is_health(path: str) -> bool:
    """Whether a path `http_route` passes on is a liveness or readiness check (of the server or a model)."""
    return _HEALTH_PATH.fullmatch(path) is not None


def shape_error(name: str, shape: Any) -> Refusal | None:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                       for d in shape[:MAX_DIMS + 1]):
        return Refusal(f"input '{name}': shape must be a list of integers", Reason.STRUCTURE)
    if len(shape) > MAX_DIMS:
        return Refusal(f"input '{name}': shape has {len(shape)} dimensions, more than {MAX_DIMS}", Reason.STRUCTURE)
    quoted = str(list(shape[:8]))[:80]  # a JSON integer may have thousands of digits
    if any(d < 0 for d in shape):
        return Refusal(f"input '{name}': shape {quoted} has a negative dimension", Reason.STRUCTURE)
    if math.prod(shape) > MAX_ELEMENTS:
        return Refusal(f"input '{name}': shape {quoted} has more than 2^40 elements", Reason.STRUCTURE)
    return None


def name_error(what: str, name: Any) -> Refusal | None:
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return None
    shown = repr(name[:64]) if isinstance(name, str) else "not a string"
    return Refusal(f"{what} name {shown} is not 1-256 characters of A-Z a-z 0-9 _ . -", Reason.STRUCTURE)


# KServe v2 / Triton parameters the front types (the rest pass as custom parameters: bool, integer, number or
# string). Shared memory is not served: its registration API is refused, so a request cannot name a region.
_UINT = ("a non-negative integer", lambda v: _is_int(v) and 0 <= v <= INT64_MAX)
_BOOL = ("a boolean", lambda v: isinstance(v, bool))
KNOWN_PARAMETERS: dict[str, dict[str, tuple[str, Any]]] = {
    "request": {"priority": _UINT, "timeout": _UINT, "sequence_start": _BOOL, "sequence_end": _BOOL,
                "binary_data_output": _BOOL,
                "sequence_id": ("a non-negative integer or a string",
                                lambda v: _UINT[1](v) or (isinstance(v, str) and len(v) <= 256))},
    "input": {"binary_data_size": _UINT},
    "output": {"binary_data": _BOOL, "classification": _UINT},
}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parameters_error(where: str, kind: str, params: Any) -> Refusal | None:
    """What is wrong with a `parameters` object of a request, input or output (`kind`), or None."""
    if not isinstance(params, dict):
        return Refusal(f"{where}'parameters' must be a JSON object", Reason.PARAMETERS)
    if len(params) > MAX_PARAMETERS:
        return Refusal(f"{where}'parameters' has {len(params)} entries, more than {MAX_PARAMETERS}", Reason.PARAMETERS)
    known = KNOWN_PARAMETERS[kind]
    for key, value in params.items():
        shown = key[:64]
        if key.startswith("shared_memory"):
            return Refusal(f"{where}parameter '{shown}': shared memory is not served", Reason.PARAMETERS)
        if key in known:
            want, ok = known[key]
            if not ok(value):
                return Refusal(f"{where}parameter '{shown}' must be {want}", Reason.PARAMETERS)
        elif not (isinstance(value, (bool, str, float)) or (_is_int(value) and -INT64_MAX - 1 <= value <= INT64_MAX)):
            return Refusal(f"{where}parameter '{shown}' must be a boolean, a 64-bit integer, a number or a string",
                           Reason.PARAMETERS)
        elif isinstance(value, float) and not math.isfinite(value):  # 1e400 reads as inf here, refused by Triton
            return Refusal(f"{where}parameter '{shown}' must be a finite number", Reason.PARAMETERS)
        elif isinstance(value, str) and len(value) > MAX_PARAMETER_CHARS:
            return Refusal(f"{where}parameter '{shown}' is longer than {MAX_PARAMETER_CHARS} characters",
                           Reason.PARAMETERS)
    return None


def infer_header_error(header: Any, max_inputs: int = DEFAULT_MAX_TENSORS,
                       max_outputs: int = DEFAULT_MAX_TENSORS) -> Refusal | None:
    """What is wrong with a parsed HTTP inference header (None: Triton may have it). The counts are checked
    before any input or output is looked at."""
    if not isinstance(header, dict):
        return Refusal("request body must be a JSON object", Reason.STRUCTURE)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return Refusal("request body must have a non-empty 'inputs' list", Reason.STRUCTURE)
    outputs = header.get("outputs", [])
    if not isinstance(outputs, list):
        return Refusal("'outputs' must be a list", Reason.STRUCTURE)
    for key, items, most in (("inputs", inputs, max_inputs), ("outputs", outputs, max_outputs)):
        if len(items) > most:
            return Refusal(f"request has {len(items)} {key}, more than the {most} the served models declare",
                           Reason.STRUCTURE)
    if "parameters" in header and (err := parameters_error("", "request", header["parameters"])) is not None:
        return err
    seen: set[str] = set()
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            return Refusal(f"inputs[{i}] must be an object", Reason.STRUCTURE)
        name = inp.get("name")
        if not isinstance(name, str) or not isinstance(inp.get("datatype"), str):
            return Refusal(f"inputs[{i}] must have a string 'name' and 'datatype'", Reason.STRUCTURE)
        if (err := name_error("input", name)) is not None:
            return err
        if name in seen:
            return Refusal(f"input '{name}' is given twice", Reason.STRUCTURE)
        seen.add(name)
        if (err := shape_error(name, inp.get("shape"))) is not None:
            return err
        if "parameters" in inp and (err := parameters_error(f"input '{name}': ", "input", inp["parameters"])):
            return err
        if "data" in inp and (err := data_error(name, inp["datatype"], inp["shape"], inp["data"])) is not None:
            return err
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            return Refusal("each of 'outputs' must be an object with a string 'name'", Reason.STRUCTURE)
        if (err := name_error("output", out["name"])) is not None:
            return err
        if "parameters" in out and (err := parameters_error(f"outputs[{i}]: ", "output", out["parameters"])):
            return err
    return None


# What Triton reads from each element of an input's JSON `data`, by datatype (`ReadDataFromJson` in http_server.cc,
# 2.51 and 2.71 alike): a string for BYTES (JSON strings only: Triton takes base64 for model files and CUDA
# shared-memory handles, neither served), a boolean for BOOL, an integer for INTn and UINTn (Triton truncates one
# out of its type's range), a number for FP32 and FP64 (one past FP32's range would be inf); FP16 and BF16 only as
# binary data. tritonserver 2.51 answers 500 to an object in BYTES data ("Unable to parse JSON bytes array") and to
# too few elements.
_INT_RANGE = {**{f"INT{b}": (-(1 << (b - 1)), (1 << (b - 1)) - 1) for b in (8, 16, 32, 64)},
              **{f"UINT{b}": (0, (1 << b) - 1) for b in (8, 16, 32, 64)}}
_FP_MAX = {"FP32": 3.4028234663852886e38, "FP64": sys.float_info.max}
_BINARY_ONLY = ("FP16", "BF16")
DATATYPES = ("BOOL", *_INT_RANGE, *_FP_MAX, "BYTES", *_BINARY_ONLY)
_KINDS = {str: "a string", bool: "a boolean", int: "a number", float: "a number", dict: "an object",
          type(None): "a null"}


def _elements(data: Any) -> list[Any]:
    """The elements of a JSON `data` value: its lists expanded at any depth (in no particular order), a scalar
    one element. Bounded by the JSON header's bounds (its size, its count of lists)."""
    if type(data) is not list:
        return [data]
    elements: list[Any] = []
    lists = [data]
    while lists:
        for x in lists.pop():
            (lists if type(x) is list else elements).append(x)
    return elements


def data_error(name: str, datatype: str, shape: list[int], data: Any) -> Refusal | None:
    """What is wrong with an input's JSON `data` (its shape already checked), or None: as many elements as its
    shape holds, each of the kind its datatype takes (`DATATYPES`), integers in their type's range, numbers finite
    in theirs. Work in C loops over the elements, bounded by the header's size."""
    where = f"input '{name}': "
    if datatype in _BINARY_ONLY:
        return Refusal(f"{where}{datatype} data cannot be sent as JSON: send it as binary data", Reason.DATA)
    if datatype not in DATATYPES:
        return Refusal(f"{where}datatype {datatype[:16]!r} is not one of {', '.join(DATATYPES)}", Reason.DATA)
    elements = _elements(data)
    if len(elements) != (want := math.prod(shape)):
        n = len(elements)
        return Refusal(f"{where}'data' has {n} element{'s' * (n != 1)}, its shape {str(list(shape))[:80]} holds "
                       f"{want}", Reason.DATA)
    if datatype == "BYTES":
        allowed, must = {str}, "a string"
    elif datatype == "BOOL":
        allowed, must = {bool}, "a boolean"
    elif datatype in _INT_RANGE:
        low, high = _INT_RANGE[datatype]
        allowed, must = {int}, f"an integer of {datatype} in [{low}, {high}]"
    else:
        allowed, must = {int, float}, f"a finite number of {datatype} (at most {_FP_MAX[datatype]:.4g} in magnitude)"
    if not set(map(type, elements)) <= allowed:
        bad = next(x for x in elements if type(x) not in allowed)
        kind = "a number that is not an integer" if allowed == {int} and type(bad) is float else _KINDS[type(bad)]
        return Refusal(f"{where}'data' of datatype {datatype} holds {kind}: each element must be {must}",
                       Reason.DATA)
    if not elements:
        return None
    if datatype in _INT_RANGE and (min(elements) < low or max(elements) > high) or \
            datatype in _FP_MAX and max(map(abs, elements)) > _FP_MAX[datatype]:
        return Refusal(f"{where}'data' of datatype {datatype} holds a value out of its range: each element must be "
                       f"{must}", Reason.DATA)
    return None


def encoding_error(encoding: str | None) -> Refusal | None:
    if encoding in (None, "", "identity"):
        return None
    return Refusal(f"Content-Encoding {encoding[:32]!r} is not accepted: send the request body uncompressed",
                   Reason.ENCODING)


def framing_error(headers: Iterable[tuple[str, str]]) -> Refusal | None:
    """Headers read one way here and another by Triton: a framing or encoding header given twice, or any
    Content-Encoding but identity (each occurrence: aiohttp inflates by the last, a check of the first passes)."""
    counts = Counter(k.lower() for k, _ in headers)
    twice = [k for k in SINGLE_HEADERS if counts[k] > 1]
    if twice:
        return Refusal(f"header {twice[0]!r} is given {counts[twice[0]]} times: give it once", Reason.FRAMING)
    for k, v in headers:
        if k.lower() == "content-encoding" and (err := encoding_error(v.strip().lower())) is not None:
            return err
    return None


def json_length(header_length: str | None, body_length: int | None) -> int | Refusal | None:
    """How many leading bytes of a body of `body_length` (None: not known yet) are its JSON header, or why not
    acceptable: 400 for a malformed Inference-Header-Content-Length, 413 (reason 'header_size') for a header over
    MAX_HEADER_BYTES. None: the body's length decides, once read."""
    if header_length is None:
        n = body_length
    elif _DIGITS.fullmatch(header_length) is None:
        return Refusal(f"Inference-Header-Content-Length {header_length[:24]!r} is not 1-10 ASCII digits",
                       Reason.FRAMING)
    else:
        n = int(header_length)
        if body_length is not None and n > body_length:
            return Refusal(f"Inference-Header-Content-Length {n} is not a length within the body", Reason.FRAMING)
    if n is not None and n > MAX_HEADER_BYTES:
        return header_size_refusal(n)
    return n


def header_size_refusal(n: int | None = None) -> Refusal:
    """A JSON header of `n` bytes (None: not known, more than read so far) over MAX_HEADER_BYTES."""
    size = "" if n is None else f"of {n} bytes "
    return Refusal(f"the request's JSON header {size}is over {MAX_HEADER_BYTES} bytes: send tensor data as binary "
                   "data (Inference-Header-Content-Length) or the video by reference", Reason.HEADER_SIZE)


class _Duplicate(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Duplicate(f"key {key[:64]!r} appears twice in one object")
    return d


def parse_header(raw: bytes) -> Any:
    """The JSON header read as Triton reads it, or a Refusal: UTF-8 only (Python would also take UTF-16 and 32),
    no lone surrogate (escaped or not), no duplicate key, no NaN or Infinity, nesting and objects and lists
    bounded (the latter counted before the parse)."""
    if (containers := raw.count(b"[") + raw.count(b"{")) > MAX_CONTAINERS:  # '[' and '{' in strings count too
        return Refusal(f"request JSON has {containers} '[' and '{{', more than {MAX_CONTAINERS}: send tensor data as "
                       "binary data (Inference-Header-Content-Length)", Reason.JSON)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Refusal(f"request body is not valid UTF-8 ({e.reason} at byte {e.start})", Reason.JSON)
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=no_constant)
    except RecursionError:
        return Refusal(f"request JSON nests more than {MAX_JSON_DEPTH} levels", Reason.JSON)
    except _Duplicate as e:
        return Refusal(f"request JSON is ambiguous: {e}", Reason.JSON)
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, an integer of more digits than Python converts
        return Refusal(f"request body is not valid JSON ({str(e)[:120]})", Reason.JSON)
    if nesting_over(header, MAX_JSON_DEPTH):
        return Refusal(f"request JSON nests more than {MAX_JSON_DEPTH} levels", Reason.JSON)
    if _SURROGATE_ESCAPE.search(text) is None:  # strict UTF-8 decoding refuses a raw surrogate: only an escape
        return header
    try:  # an escaped lone surrogate ("\ud800") parses into a str that is not Unicode text
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return Refusal("request JSON has a lone surrogate (\\ud800-\\udfff unpaired)", Reason.JSON)
    return header


def http_infer_error(body: bytes | bytearray, header_length: str | None, max_inputs: int = DEFAULT_MAX_TENSORS,
                     max_outputs: int = DEFAULT_MAX_TENSORS) -> Refusal | None:
    """Why an HTTP inference body (its headers checked by `framing_error`) is refused (400, or 413 for a JSON
    header over MAX_HEADER_BYTES), or None."""
    n = json_length(header_length, len(body))
    if isinstance(n, Refusal):
        return n
    header = parse_header(bytes(memoryview(body)[:n]))
    if isinstance(header, Refusal):
        return header
    return infer_header_error(header, max_inputs, max_outputs)


def model_error(name: str, models: tuple[str, ...]) -> Refusal | None:
    if name in models:
        return None
    return Refusal(f"model '{name[:64]}' is not served: the public model is {', '.join(models)}", Reason.MODEL)


def bounded_error_body(body: bytes) -> bytes:
    """tritonserver's error body, its text cut to MAX_ERROR_CHARS (a 64 KiB name comes back in it)."""
    if len(body) <= MAX_ERROR_CHARS:
        return body
    try:
        text = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        text = body[:MAX_ERROR_CHARS].decode("utf-8", "replace")
    return json.dumps({"error": bounded_text(str(text))}).encode()



