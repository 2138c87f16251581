"""The public face of a launched server, the only ports a client reaches: it passes on to tritonserver's loopback
ports what the public API allows, each request read once and bounded first. Here: the policy (pure functions) and
the HTTP and metrics ports; the gRPC port is front_grpc.py, the process front_main.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from videoitg.jsonio import nesting_over
from videoitg.serving.protocol import OTHER_INPUTS_BYTES
from videoitg.serving.upstream import Upstream, UpstreamError

# aiohttp, grpc and tritonclient (the serve extra) are imported where the transport is built: the launcher and the
# policy tests import this module without them.
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
MAX_ERROR_CHARS = 1024  # of tritonserver's error text passed on
KEEPALIVE_S = 15.0  # to send a request's headers, and an idle keep-alive connection's life
BODY_IDLE_S = 10.0  # the longest wait for the next byte of a body
BODY_GRACE_S = 10.0  # a body must keep pace: n bytes in at most BODY_GRACE_S + n / MIN_BODY_RATE of waiting for them
MIN_BODY_RATE = 1 << 20  # bytes per second
READ_BUFSIZE = 256 << 10  # aiohttp's read buffer per connection (its high-water mark is twice this)
FORWARD_BYTES = 64 << 10  # the smallest write of a body passed on while it arrives (but its last)
METRICS_CONNECTIONS = 32  # open connections on the metrics port (a scraper needs one or two)
LINGER_S = 2.0  # a refused body still arriving is read and dropped this long, so the refusal reaches the client
SERVICE = "inference.GRPCInferenceService"
OVER_BUDGET = "the server holds too many request bodies now: retry shortly"  # a refusal of the held-bytes budget
ABANDONED = "the client closed the connection before the body was sent"
# The gRPC calls passed on (the rest, model control, shared memory, logging and trace, are answered UNIMPLEMENTED)
GRPC_METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig",
                "ModelStatistics", "ModelInfer")
PASS_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
# Headers that frame or encode a request: two of one are two readings of it (aiohttp and Triton pick differently).
SINGLE_HEADERS = ("content-length", "transfer-encoding", "content-encoding", "content-type",
                  "inference-header-content-length", "expect")
_NAME = r"[A-Za-z0-9_.-]{1,256}"
_NAME_RE = re.compile(_NAME)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # JSON's escape of a UTF-16 surrogate, paired or not
_DIGITS = re.compile(r"[0-9]{1,10}")  # plain ASCII: str.isdigit() also takes '²' and other scripts' digits
_VERSION = re.compile(r"[0-9]{0,19}")  # gRPC's model_version: empty (the policy's choice) or a version number
_MODEL_PATH = re.compile(rf"/v2/models/(?P<model>{_NAME})(?:/versions/(?P<version>[0-9]{{1,19}}))?"
                         r"(?P<action>/infer|/ready|/config|/stats)?")
_SERVER_PATHS = ("/v2", "/v2/health/live", "/v2/health/ready")
INT64_MAX = (1 << 63) - 1


@dataclass(frozen=True)
class FrontConfig:
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    triton_http: str  # host:port of tritonserver's own endpoints
    triton_grpc: str
    triton_metrics: str
    models: tuple[str, ...]  # the models a client may use
    max_request_bytes: int
    shutdown_s: float = 10.0  # in-flight requests get this long on SIGTERM
    max_inputs: int = DEFAULT_MAX_TENSORS  # the public models' signature (`RepoSummary.signature_bound`)
    max_outputs: int = DEFAULT_MAX_TENSORS
    held_bytes: int = 1 << 30  # request body bytes held at once, all connections together (at least one request)
    # open client connections on the HTTP port (below the common 1024 open-file limit); gRPC calls waiting for their
    # message, and gRPC calls being answered
    max_connections: int = 768
    pass_timeout_s: float = 10.0  # health, metadata, config, statistics, metrics toward tritonserver
    infer_timeout_s: float = 300.0  # an inference toward tritonserver
    keepalive_s: float = KEEPALIVE_S  # to send a request's headers; an idle keep-alive connection's life
    body_idle_s: float = BODY_IDLE_S  # the longest wait for the next byte of a request body


class Refusal(str):
    """Why a request is refused: the text the client gets, and `reason`, a short label for the front's counter."""

    reason: str

    def __new__(cls, text: str, reason: str) -> Refusal:
        r = super().__new__(cls, text)
        r.reason = reason
        return r


# ---- policy (pure, unit-tested without a server) ----------------------------------------------------------------
# tritonserver listens on loopback ports that only the launcher knows. This front listens on the public HTTP, gRPC
# and metrics ports and passes on what the public API allows: health, server metadata, every model's metadata,
# readiness, config and statistics (read-only; the metrics page names every model anyway), inference of the public
# models, and the metrics page. Everything else, inference of an internal step and the model-repository,
# shared-memory, logging and trace APIs, is answered here (HTTP 404, gRPC UNIMPLEMENTED or NOT_FOUND) and never
# reaches Triton.
#
# Each inference request has one reading, checked before it is passed on by the pure functions below (a refusal is a
# `Refusal`: its text names the problem, its `reason` labels the front's `videoitg_front_rejected` counter):
# - its size is bounded (HTTP 413, gRPC RESOURCE_EXHAUSTED), and so is its JSON header (`MAX_HEADER_BYTES`: videos
#   travel as binary data or by reference; gRPC: every field but raw_input_contents), refused before anything is
#   parsed, and so are the JSON header's objects and lists (`MAX_CONTAINERS`);
# - HTTP: framing and encoding headers appear once (`SINGLE_HEADERS`), no content encoding but identity (refused
#   before the body is read: these checks would read compressed bytes that Triton inflates; the front itself
#   inflates nothing), `Inference-Header-Content-Length` is plain
#   ASCII digits; the JSON header is UTF-8 without lone surrogates, has no duplicate keys (Python would read the
#   last, Triton the first), nests at most `MAX_JSON_DEPTH` levels and has the structure of a KServe v2 inference
#   request, its `parameters` typed as KServe v2 and Triton define them (400 naming what is wrong; Triton 2.51
#   answers some malformed bodies with 500 and is killed by a deeply nested one);
# - at most as many inputs and outputs as the public models' signatures declare (the repository summary), counted before
#   any of them is looked at (gRPC: and one `raw_input_contents` per input when any);
# - every input's shape has at most `MAX_ELEMENTS` elements (a shape whose byte size overflows passes Triton 2.51's
#   size check and aborts the python-backend stub before any model code runs).
# A body reaches Triton whole, with a Content-Length: Triton 2.51 overflows its stack decoding a body sent in many
# small chunks (CVE-2025-23310 / CVE-2025-23311).
def http_route(method: str, path: str, models: tuple[str, ...]) -> tuple[str, str] | Refusal:
    """('pass' | 'infer', path to send Triton) for an allowed HTTP request, else the reason it is refused. The path
    sent on is rebuilt from what was matched, so an encoded or doubled segment cannot name another model."""
    method = method[:16]
    if path in _SERVER_PATHS:
        return ("pass", path) if method == "GET" else Refusal(f"{method} {path} is not served (GET only)", "route")
    m = _MODEL_PATH.fullmatch(path)
    if m is None:
        return Refusal(f"{method} {path[:80] or '(no path)'} is not served: this server answers health, metadata and "
                       f"inference of {', '.join(models)}", "route")
    action = m["action"] or ""
    # Every model's metadata, readiness, config and statistics are read-only (an ensemble's client, perf_analyzer,
    # reads its steps'; the metrics page names them anyway); inference is the public models' only.
    if action == "/infer" and (err := model_error(m["model"], models)) is not None:
        return err
    want = "POST" if action == "/infer" else "GET"
    if method != want:
        return Refusal(f"{method} {path} is not served ({want} only)", "route")
    version = f"/versions/{m['version']}" if m["version"] else ""
    return ("infer" if action == "/infer" else "pass"), f"/v2/models/{m['model']}{version}{action}"


def shape_error(name: str, shape: Any) -> Refusal | None:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                       for d in shape[:MAX_DIMS + 1]):
        return Refusal(f"input '{name}': shape must be a list of integers", "structure")
    if len(shape) > MAX_DIMS:
        return Refusal(f"input '{name}': shape has {len(shape)} dimensions, more than {MAX_DIMS}", "structure")
    quoted = str(list(shape[:8]))[:80]  # a JSON integer may have thousands of digits
    if any(d < 0 for d in shape):
        return Refusal(f"input '{name}': shape {quoted} has a negative dimension", "structure")
    if math.prod(shape) > MAX_ELEMENTS:
        return Refusal(f"input '{name}': shape {quoted} has more than 2^40 elements", "structure")
    return None


def name_error(what: str, name: Any) -> Refusal | None:
    if isinstance(name, str) and _NAME_RE.fullmatch(name):
        return None
    shown = repr(name[:64]) if isinstance(name, str) else "not a string"
    return Refusal(f"{what} name {shown} is not 1-256 characters of A-Z a-z 0-9 _ . -", "structure")


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
        return Refusal(f"{where}'parameters' must be a JSON object", "parameters")
    if len(params) > MAX_PARAMETERS:
        return Refusal(f"{where}'parameters' has {len(params)} entries, more than {MAX_PARAMETERS}", "parameters")
    known = KNOWN_PARAMETERS[kind]
    for key, value in params.items():
        shown = key[:64]
        if key.startswith("shared_memory"):
            return Refusal(f"{where}parameter '{shown}': shared memory is not served", "parameters")
        if key in known:
            want, ok = known[key]
            if not ok(value):
                return Refusal(f"{where}parameter '{shown}' must be {want}", "parameters")
        elif not (isinstance(value, (bool, str, float)) or (_is_int(value) and -INT64_MAX - 1 <= value <= INT64_MAX)):
            return Refusal(f"{where}parameter '{shown}' must be a boolean, a 64-bit integer, a number or a string",
                           "parameters")
        elif isinstance(value, float) and not math.isfinite(value):  # 1e400 reads as inf here, refused by Triton
            return Refusal(f"{where}parameter '{shown}' must be a finite number", "parameters")
        elif isinstance(value, str) and len(value) > MAX_PARAMETER_CHARS:
            return Refusal(f"{where}parameter '{shown}' is longer than {MAX_PARAMETER_CHARS} characters",
                           "parameters")
    return None


def infer_header_error(header: Any, max_inputs: int = DEFAULT_MAX_TENSORS,
                       max_outputs: int = DEFAULT_MAX_TENSORS) -> Refusal | None:
    """What is wrong with a parsed HTTP inference header (None: Triton may have it). The counts are checked
    before any input or output is looked at."""
    if not isinstance(header, dict):
        return Refusal("request body must be a JSON object", "structure")
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return Refusal("request body must have a non-empty 'inputs' list", "structure")
    outputs = header.get("outputs", [])
    if not isinstance(outputs, list):
        return Refusal("'outputs' must be a list", "structure")
    for key, items, most in (("inputs", inputs, max_inputs), ("outputs", outputs, max_outputs)):
        if len(items) > most:
            return Refusal(f"request has {len(items)} {key}, more than the {most} the served models declare",
                           "structure")
    if "parameters" in header and (err := parameters_error("", "request", header["parameters"])) is not None:
        return err
    seen: set[str] = set()
    for i, inp in enumerate(inputs):
        if not isinstance(inp, dict):
            return Refusal(f"inputs[{i}] must be an object", "structure")
        name = inp.get("name")
        if not isinstance(name, str) or not isinstance(inp.get("datatype"), str):
            return Refusal(f"inputs[{i}] must have a string 'name' and 'datatype'", "structure")
        if (err := name_error("input", name)) is not None:
            return err
        if name in seen:
            return Refusal(f"input '{name}' is given twice", "structure")
        seen.add(name)
        if (err := shape_error(name, inp.get("shape"))) is not None:
            return err
        if "parameters" in inp and (err := parameters_error(f"input '{name}': ", "input", inp["parameters"])):
            return err
    for i, out in enumerate(outputs):
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            return Refusal("each of 'outputs' must be an object with a string 'name'", "structure")
        if (err := name_error("output", out["name"])) is not None:
            return err
        if "parameters" in out and (err := parameters_error(f"outputs[{i}]: ", "output", out["parameters"])):
            return err
    return None


def encoding_error(encoding: str | None) -> Refusal | None:
    if encoding in (None, "", "identity"):
        return None
    return Refusal(f"Content-Encoding {encoding[:32]!r} is not accepted: send the request body uncompressed",
                   "encoding")


def framing_error(headers: Iterable[tuple[str, str]]) -> Refusal | None:
    """Headers read one way here and another by Triton: a framing or encoding header given twice, or any
    Content-Encoding but identity (each occurrence: aiohttp inflates by the last, a check of the first passes)."""
    counts = Counter(k.lower() for k, _ in headers)
    twice = [k for k in SINGLE_HEADERS if counts[k] > 1]
    if twice:
        return Refusal(f"header {twice[0]!r} is given {counts[twice[0]]} times: give it once", "framing")
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
                       "framing")
    else:
        n = int(header_length)
        if body_length is not None and n > body_length:
            return Refusal(f"Inference-Header-Content-Length {n} is not a length within the body", "framing")
    if n is not None and n > MAX_HEADER_BYTES:
        return header_size_refusal(n)
    return n


def header_size_refusal(n: int | None = None) -> Refusal:
    """A JSON header of `n` bytes (None: not known, more than read so far) over MAX_HEADER_BYTES."""
    size = "" if n is None else f"of {n} bytes "
    return Refusal(f"the request's JSON header {size}is over {MAX_HEADER_BYTES} bytes: send tensor data as binary "
                   "data (Inference-Header-Content-Length) or the video by reference", "header_size")


class _Duplicate(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise _Duplicate(f"key {key[:64]!r} appears twice in one object")
    return d


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_header(raw: bytes) -> Any:
    """The JSON header read as Triton reads it, or a Refusal: UTF-8 only (Python would also take UTF-16 and 32),
    no lone surrogate (escaped or not), no duplicate key, no NaN or Infinity, nesting and objects and lists
    bounded (the latter counted before the parse)."""
    if (containers := raw.count(b"[") + raw.count(b"{")) > MAX_CONTAINERS:  # '[' and '{' in strings count too
        return Refusal(f"request JSON has {containers} '[' and '{{', more than {MAX_CONTAINERS}: send tensor data as "
                       "binary data (Inference-Header-Content-Length)", "json")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Refusal(f"request body is not valid UTF-8 ({e.reason} at byte {e.start})", "json")
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        return Refusal(f"request JSON nests more than {MAX_JSON_DEPTH} levels", "json")
    except _Duplicate as e:
        return Refusal(f"request JSON is ambiguous: {e}", "json")
    except ValueError as e:  # JSONDecodeError, NaN/Infinity, an integer of more digits than Python converts
        return Refusal(f"request body is not valid JSON ({str(e)[:120]})", "json")
    if nesting_over(header, MAX_JSON_DEPTH):
        return Refusal(f"request JSON nests more than {MAX_JSON_DEPTH} levels", "json")
    if _SURROGATE_ESCAPE.search(text) is None:  # strict UTF-8 decoding refuses a raw surrogate: only an escape
        return header
    try:  # an escaped lone surrogate ("\ud800") parses into a str that is not Unicode text
        json.dumps(header, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return Refusal("request JSON has a lone surrogate (\\ud800-\\udfff unpaired)", "json")
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
    return Refusal(f"model '{name[:64]}' is not served: the public model is {', '.join(models)}", "route")


def grpc_parameters_error(where: str, params: Any) -> Refusal | None:
    """A gRPC `parameters` map: bounded, no shared memory, the typed ones as Triton reads them, finite numbers."""
    if len(params) > MAX_PARAMETERS:
        return Refusal(f"{where}'parameters' has {len(params)} entries, more than {MAX_PARAMETERS}", "parameters")
    for key, p in params.items():
        shown = key[:64]
        if key.startswith("shared_memory"):
            return Refusal(f"{where}parameter '{shown}': shared memory is not served", "parameters")
        choice = p.WhichOneof("parameter_choice")
        value = getattr(p, choice) if choice else None
        if key in ("priority", "timeout") and not (choice in ("int64_param", "uint64_param") and value >= 0):
            return Refusal(f"{where}parameter '{shown}' must be a non-negative integer", "parameters")
        if choice == "double_param" and not math.isfinite(value):
            return Refusal(f"{where}parameter '{shown}' must be a finite number", "parameters")
        if choice == "string_param" and len(value) > MAX_PARAMETER_CHARS:
            return Refusal(f"{where}parameter '{shown}' is longer than {MAX_PARAMETER_CHARS} characters",
                           "parameters")
    return None


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise ValueError("truncated or overlong varint")
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if byte < 0x80:
            return value, i


def grpc_message_error(raw: bytes, models: tuple[str, ...], max_inputs: int = DEFAULT_MAX_TENSORS,
                       max_outputs: int = DEFAULT_MAX_TENSORS) -> Refusal | None:
    """Why a serialized ModelInferRequest is refused, or None: its model name and counts from its wire fields
    first (`grpc_scan`), then every field but the raw contents parsed and checked (`grpc_infer_error`). The
    video's bytes are never parsed or copied here."""
    err, head, n_raw = grpc_scan(raw, models, max_inputs, max_outputs)
    if err is not None:
        return err
    from tritonclient.grpc import service_pb2  # the serve extra: the launcher imports this module without it

    try:
        request = service_pb2.ModelInferRequest.FromString(head)
    except Exception as e:  # protobuf's DecodeError
        return Refusal(f"malformed ModelInfer request ({str(e)[:120]})", "structure")
    return grpc_infer_error(request, models, max_inputs, max_outputs, n_raw)


def grpc_scan(raw: bytes, models: tuple[str, ...], max_inputs: int = DEFAULT_MAX_TENSORS,
              max_outputs: int = DEFAULT_MAX_TENSORS) -> tuple[Refusal | None, bytes, int]:
    """(why the request is refused or None, the message without its raw_input_contents, how many it had).
    Why a serialized ModelInferRequest is refused by its model name and its counts alone comes from
    its top-level wire fields (model_name 1, inputs 5, outputs 6, raw_input_contents 7), skipping each field's
    bytes, and stopping once past what a request may have. The work is bounded by that count, not by the
    message: 3 million empty inputs (5.7 MiB), parsed whole, took 3.3 GB of the front's memory and most of a
    second of its event loop, and a message at the size bound could hold a hundred times more."""
    most_fields = 2 * max_inputs + max_outputs + MAX_PARAMETERS + 8  # inputs, raw contents, outputs, parameters
    counts = {5: 0, 6: 0, 7: 0}
    name, i, fields, head_bytes = "", 0, 0, 0
    head: list[bytes] = []  # every field but the raw contents: what the checks parse (a few KiB, not the video)
    try:
        while i < len(raw):
            fields += 1
            if fields > most_fields:
                return Refusal(f"request has more than {most_fields} fields", "structure"), b"", 0
            start = i
            key, i = _varint(raw, i)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, i = _varint(raw, i)
            elif wire in (1, 5):
                i += 8 if wire == 1 else 4
            elif wire == 2:
                length, i = _varint(raw, i)
                if number == 1:
                    name = raw[i:i + length].decode("utf-8", "replace")  # the last one counts, as in protobuf
                i += length
            else:
                raise ValueError(f"wire type {wire}")
            if i > len(raw):
                raise ValueError("a field runs past the message")
            if number != 7:
                head_bytes += i - start
                if head_bytes > MAX_HEADER_BYTES:  # parsed whole below: nested fields (shapes, contents) grow it
                    return Refusal(f"request's fields other than raw_input_contents are over {MAX_HEADER_BYTES} bytes: "
                                   "send tensor data in raw_input_contents", "header_size"), b"", 0
                head.append(raw[start:i])
            if number in counts:
                counts[number] += 1
                if counts[5] > max_inputs or counts[6] > max_outputs or counts[7] > max_inputs:
                    what = {5: "inputs", 6: "outputs", 7: "raw_input_contents"}[number]
                    return Refusal(f"request has more {what} than the {max_inputs if number != 6 else max_outputs} "
                                   "the served models declare", "structure"), b"", 0
    except ValueError as e:
        return Refusal(f"malformed ModelInfer request ({e})", "structure"), b"", 0
    err = model_error(name, models) or _counts_error(counts[5], counts[6], counts[7], max_inputs, max_outputs)
    return err, b"".join(head), counts[7]


def _counts_error(n_in: int, n_out: int, n_raw: int, max_inputs: int, max_outputs: int) -> Refusal | None:
    if not n_in:
        return Refusal("request has no inputs", "structure")
    for key, n, most in (("inputs", n_in, max_inputs), ("outputs", n_out, max_outputs)):
        if n > most:
            return Refusal(f"request has {n} {key}, more than the {most} the served models declare", "structure")
    if n_raw and n_raw != n_in:
        return Refusal(f"request has {n_raw} raw_input_contents for {n_in} inputs: give one per input",
                       "structure")
    return None


def grpc_infer_error(request: Any, models: tuple[str, ...], max_inputs: int = DEFAULT_MAX_TENSORS,
                     max_outputs: int = DEFAULT_MAX_TENSORS, n_raw: int | None = None) -> Refusal | None:
    """Why a parsed `ModelInferRequest` is refused, or None. Counts first: a message of a few MiB can hold
    millions of empty inputs, and looking at each costs seconds of Python."""
    if (err := model_error(request.model_name, models)) is not None:
        return err
    if _VERSION.fullmatch(request.model_version) is None:
        return Refusal(f"model_version {request.model_version[:24]!r} is not empty or 1-19 ASCII digits", "route")
    n_raw = len(request.raw_input_contents) if n_raw is None else n_raw  # given: parsed without them (grpc_scan)
    if (err := _counts_error(len(request.inputs), len(request.outputs), n_raw, max_inputs, max_outputs)) is not None:
        return err
    if (err := grpc_parameters_error("", request.parameters)) is not None:
        return err
    seen: set[str] = set()
    for inp in request.inputs:
        if (err := name_error("input", inp.name)) is not None:
            return err
        if inp.name in seen:
            return Refusal(f"input '{inp.name}' is given twice", "structure")
        seen.add(inp.name)
        if len(inp.shape) > MAX_DIMS:  # before the shape is copied: it may hold a million dimensions
            return Refusal(f"input '{inp.name}': shape has {len(inp.shape)} dimensions, more than {MAX_DIMS}",
                           "structure")
        if (err := shape_error(inp.name, list(inp.shape))) is not None:
            return err
        if (err := grpc_parameters_error(f"input '{inp.name}': ", inp.parameters)) is not None:
            return err
    for out in request.outputs:
        if (err := name_error("output", out.name)) is not None:
            return err
        if (err := grpc_parameters_error(f"output '{out.name}': ", out.parameters)) is not None:
            return err
    return None


def bounded_error_body(body: bytes) -> bytes:
    """tritonserver's error body, its text cut to MAX_ERROR_CHARS (a 64 KiB name comes back in it)."""
    if len(body) <= MAX_ERROR_CHARS:
        return body
    try:
        text = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        text = body[:MAX_ERROR_CHARS].decode("utf-8", "replace")
    return json.dumps({"error": bounded_text(str(text))}).encode()


def bounded_text(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + " [...]"


class ByteBudget:
    """Request body bytes held at once, all connections together: a chunk is taken before it is kept."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        self.high = 0  # the most held since its owner last lowered it (front_main trims the heap after a fall)

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        self.high = max(self.high, self.held)
        return True

    def give(self, n: int) -> None:
        self.held -= n


def body_time_left(waited_s: float, received: int) -> float:
    """How much longer a request body (or gRPC message) may wait for its client's bytes, having waited `waited_s`
    for the `received` so far: it must keep pace with MIN_BODY_RATE after a grace of BODY_GRACE_S, the allowance
    growing with each byte that arrives. A trickle is refused within about BODY_GRACE_S, whatever length it
    declared; a client at MIN_BODY_RATE or faster never is."""
    return BODY_GRACE_S + received / MIN_BODY_RATE - waited_s


def body_timeout(what: str, stalled_s: float | None = None) -> Refusal:
    """The refusal of a body or message (`what`) that had no byte for `stalled_s`, or (None) fell behind its pace."""
    why = (f"stalled (no byte for {stalled_s:.0f} s)" if stalled_s is not None
           else f"slower than {MIN_BODY_RATE >> 20} MiB/s")
    return Refusal(f"{what} {why}", "body_timeout")


def held_budget(cfg: FrontConfig) -> ByteBudget:
    """The request bytes both ports may hold at once (at least one request's)."""
    return ByteBudget(max(cfg.held_bytes, cfg.max_request_bytes))


class WaitingCalls:
    """gRPC calls whose request message has not all arrived, at most `limit`, the one longest without a byte
    first: a call past the limit displaces it. Under a flood of streams that send their headers and then wait, that
    is one of those, never a message still arriving."""

    def __init__(self, limit: int):
        self.limit = limit
        self.calls: dict[Any, None] = {}  # insertion-ordered: the oldest first

    def arrive(self, call: Any) -> Any | None:
        """Registers `call`; returns the call it displaces, if any (to be ended by its owner)."""
        oldest = None
        if len(self.calls) >= self.limit:
            oldest = next(iter(self.calls))
            del self.calls[oldest]
        self.calls[call] = None
        return oldest

    def progress(self, call: Any) -> None:
        """Bytes of `call`'s message arrived: it goes last."""
        if call in self.calls:
            self.calls.pop(call)
            self.calls[call] = None

    def leave(self, call: Any) -> None:
        """`call` no longer waits: its message came, or it ended."""
        self.calls.pop(call, None)


class BodyReader:
    """A request body read chunk by chunk from an aiohttp StreamReader (`readany`) under the front's bounds: at most
    `limit` bytes; each chunk taken from `budget` before it is kept (given back by `release`, once the request is
    answered); a byte at least every `idle_s`, and the body's pace kept (`body_time_left`), counting only the time
    spent waiting for the client: while the front does not read (tritonserver taking the body slower than it
    arrives), the client is not blamed. `refusal` says why reading stopped early: over `limit` (413), over the
    budget (503), too slow (408), the client gone ('abandoned'), a malformed chunked encoding."""

    def __init__(self, stream: Any, limit: int, budget: ByteBudget, idle_s: float = BODY_IDLE_S):
        self.stream, self.limit, self.budget, self.idle_s = stream, limit, budget, idle_s
        self.loop = asyncio.get_running_loop()
        self.waited = 0.0  # seconds spent waiting for the client's bytes
        self.received = 0
        self.taken = 0
        self.refusal: Refusal | None = None

    async def chunk(self) -> bytes | None:
        """The next chunk, b"" at the end of the body, or None once refused (`refusal` says why)."""
        if self.refusal is not None:
            return None
        left = body_time_left(self.waited, self.received)
        if left <= 0:
            self.refusal = body_timeout("request body")
            return None
        wait = min(self.idle_s, left)
        try:  # a body all in hand is taken without a wait (wait_for costs a task and a timer)
            if self.stream.is_eof():
                chunk = self.stream.read_nowait()
            else:
                t0 = self.loop.time()
                try:
                    chunk = await asyncio.wait_for(self.stream.readany(), wait)
                finally:
                    self.waited += self.loop.time() - t0
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            self.refusal = body_timeout("request body", wait if wait == self.idle_s else None)
        except ConnectionError as e:
            e.__traceback__ = None  # the request's stream keeps this exception: its traceback would hold the body
            self.refusal = Refusal(ABANDONED, "abandoned")
        except Exception as e:  # aiohttp's payload errors: a malformed chunked encoding
            e.__traceback__ = None
            self.refusal = Refusal(f"request body is malformed ({type(e).__name__})", "framing")
        else:
            if self.received + len(chunk) > self.limit:
                self.refusal = Refusal(f"request body is over the server's limit of {self.limit} bytes", "too_large")
            elif not self.budget.take(len(chunk)):
                self.refusal = Refusal(OVER_BUDGET, "overloaded")
            else:
                self.received += len(chunk)
                self.taken += len(chunk)
                return chunk
        return None

    def release(self) -> None:
        self.budget.give(self.taken)
        self.taken = 0


async def stream_body(pending: list[bytes], reader: BodyReader) -> AsyncIterator[bytes]:
    """The chunks in hand, then the rest of the body as it arrives, in pieces of at least FORWARD_BYTES (the last
    may be shorter): a client's small writes reach tritonserver coalesced. A refusal while reading ends the stream
    with `BodyRefused` (`reader.refusal` says why)."""
    size = sum(map(len, pending))
    while chunk := await reader.chunk():
        if size + len(chunk) < FORWARD_BYTES:
            pending.append(chunk)
            size += len(chunk)
            continue
        yield b"".join((*pending, chunk)) if pending else chunk
        pending, size = [], 0
    if reader.refusal is not None:
        pending.clear()
        raise BodyRefused(reader.refusal)
    if pending:
        yield b"".join(pending)


class BodyRefused(Exception):
    """A body refused while it was passed on (`BodyReader.refusal`)."""


# ---- the servers ----------------------------------------------------------------------------------------------
class FrontCounters:
    """What the front answered itself, on the metrics page beside tritonserver's: `videoitg_front_rejected{protocol,
    reason}` (the client's fault: a Refusal's reason) and `videoitg_front_unavailable{protocol}` (tritonserver did
    not answer within its bound, or could not be reached)."""

    def __init__(self) -> None:
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.unavailable: Counter[str] = Counter()

    def reject(self, protocol: str, refusal: str) -> None:
        self.rejected[protocol, getattr(refusal, "reason", "other")] += 1

    def text(self) -> str:
        lines = ["# HELP videoitg_front_rejected requests the front refused for the client's fault, by reason",
                 "# TYPE videoitg_front_rejected counter"]
        lines += [f'videoitg_front_rejected{{protocol="{p}",reason="{r}"}} {n}'
                  for (p, r), n in sorted(self.rejected.items())]
        lines += ["# HELP videoitg_front_unavailable requests answered unavailable: tritonserver did not answer",
                  "# TYPE videoitg_front_unavailable counter"]
        lines += [f'videoitg_front_unavailable{{protocol="{p}"}} {n}' for p, n in sorted(self.unavailable.items())]
        return "\n".join(lines) + "\n"


_STATUS = {"too_large": 413, "header_size": 413, "overloaded": 503, "body_timeout": 408, "connections": 503}


def _refused(counters: FrontCounters, protocol: str, err: Refusal, status: int, close: bool = True):  # -> Response
    """The answer to a refused request, counted as the client's fault."""
    from aiohttp import web

    counters.reject(protocol, err)
    r = web.json_response({"error": err}, status=status, headers={"Retry-After": "1"} if status == 503 else None)
    if close:
        r.force_close()  # the answer says `Connection: close`, and the connection closes after it
    return r


class _ServerLog(logging.LoggerAdapter):
    """aiohttp's server log for one port. A request aiohttp's own parser refused (bad framing, control bytes, a line
    or header over its bound, TLS on the plain port: aiohttp answers 400 and closes) is the client's fault: counted
    as `reason="syntax"`, not logged. Anything else goes to aiohttp's server log (the front's handlers raise no
    HttpProcessingError: `BodyReader` turns a body's errors into refusals)."""

    def __init__(self, protocol: str, counters: FrontCounters):
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.protocol, self.counters = protocol, counters

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            self.counters.reject(self.protocol, Refusal("", "syntax"))
            return
        super().log(level, msg, *args, **kwargs)


def _http_handler(cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget, conns: _Connections):
    """The HTTP port's request handler and the upstream it holds. It answers every request aiohttp parsed, whatever
    its target (`http_route` is the only router); `conns` is what it shares with the connections (`_Connection`)."""
    from aiohttp import web

    # Pooled keep-alive connections (upstream.py). A model load holds
    # the tritonserver thread its connection is served on, so the launcher reloads over gRPC (`TritonServer._admin`).
    # No Accept-Encoding of the front's own: a client that asked for none gets none.
    triton = Upstream(cfg.triton_http)

    async def forward(method: str, path: str, body: bytes | AsyncIterator[bytes] | None, headers: dict[str, str],
                      timeout_s: float, reader: BodyReader | None = None) -> web.Response:
        """tritonserver's answer; `reader`: the body being passed on, whose refusal (the client's fault) is
        answered as such when it ends the request."""
        try:
            answer = await triton.request(method, path, headers, body, timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError, BodyRefused) as e:
            e.__traceback__ = None  # it would hold the request's frames, and so its body
            if reader is not None and reader.refusal is not None:
                return refuse_body(reader.refusal)
            counters.unavailable["http"] += 1
            return web.json_response({"error": f"server unavailable ({type(e).__name__}: no answer within "
                                               f"{timeout_s:.0f} s); try again"}, status=503)
        passed = {k: answer.headers[k.lower()] for k in PASS_HEADERS if k.lower() in answer.headers}
        data = answer.body
        if answer.status >= 400 and "Content-Encoding" not in passed:
            data = bounded_error_body(data)
        return web.Response(status=answer.status, body=data, headers=passed)

    def refuse(err: Refusal, status: int, close: bool = True) -> web.Response:
        return _refused(counters, "http", err, status, close)

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        conns.busy.add(request.protocol)
        try:
            return await answer(request)
        finally:
            conns.busy.discard(request.protocol)

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        route = http_route(request.method, request.path, cfg.models)
        if isinstance(route, Refusal):  # the body, if any, is not read: the connection closes
            return refuse(route, 404)
        kind, path = route
        headers = {k: request.headers[k] for k in ("Content-Type", "Inference-Header-Content-Length", "Accept-Encoding")
                   if k in request.headers}
        if kind == "pass":
            return await forward("GET", path, None, headers, cfg.pass_timeout_s)
        # All before the body is read (and before `100 Continue`).
        if (err := framing_error(request.headers.items())) is not None:
            return refuse(err, 400)
        declared = request.content_length
        if declared is not None and declared > cfg.max_request_bytes:
            return _too_large(declared)
        n = json_length(request.headers.get("Inference-Header-Content-Length"), declared)
        if isinstance(n, Refusal):
            return refuse(n, _STATUS.get(n.reason, 400))
        if (err := await _continue(request)) is not None:
            return refuse(err, 417)
        reader = BodyReader(request.content, cfg.max_request_bytes, budget, cfg.body_idle_s)
        conns.reading[request.protocol] = request.content
        try:
            if request.protocol in conns.shut and not request.content.is_eof():  # shut before this handler ran
                return refuse(Refusal(ABANDONED, "abandoned"), 400)
            return await infer(request, path, headers, reader, declared, n)
        finally:
            conns.reading.pop(request.protocol, None)
            reader.release()

    async def infer(request: web.BaseRequest, path: str, headers: dict[str, str], reader: BodyReader,
                    declared: int | None, n: int | None) -> web.StreamResponse:
        """Reads the body's JSON header (its first `n` bytes; None: the whole body), checks it, then passes the
        body on: whole when it is all in hand or its length is not declared (a chunked request: tritonserver gets
        a Content-Length), else the rest as it arrives (`stream_body`)."""
        chunks, have = [], 0
        while (n is None or have < n) and (chunk := await reader.chunk()):
            chunks.append(chunk)
            have += len(chunk)
            if n is None and have > MAX_HEADER_BYTES:  # a chunked body, all of it JSON header
                chunks.clear()
                return refuse(header_size_refusal(), 413)
        if reader.refusal is None and declared is None:
            while chunk := await reader.chunk():
                chunks.append(chunk)
                have += len(chunk)
        if reader.refusal is not None:
            chunks.clear()
            return refuse_body(reader.refusal)
        whole = declared is None or have == declared
        head = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        err = http_infer_error(head if whole else head[:n], request.headers.get("Inference-Header-Content-Length"),
                               cfg.max_inputs, cfg.max_outputs)
        if err is not None:
            return refuse(err, _STATUS.get(err.reason, 400), close=not whole)
        if whole:
            return await forward("POST", path, head, headers, cfg.infer_timeout_s)
        body, chunks, head = stream_body(chunks, reader), [], b""  # the stream alone holds what it has not passed on
        return await forward("POST", path, body, {**headers, "Content-Length": str(declared)}, cfg.infer_timeout_s,
                             reader)

    def refuse_body(err: Refusal) -> web.Response:
        return _too_large(None) if err.reason == "too_large" else refuse(err, _STATUS.get(err.reason, 400))

    def _too_large(n: int | None) -> web.Response:
        size = f"of {n} bytes " if n is not None else ""
        why = f"the served --max-video-bytes per video of a batch, plus {OTHER_INPUTS_BYTES >> 20} MiB"
        err = f"request body {size}is over the server's limit of {cfg.max_request_bytes} bytes ({why})"
        return refuse(Refusal(err, "too_large"), 413)

    return handle, triton


async def _continue(request: Any) -> Refusal | None:
    """`100 Continue` for a request that asked (Expect: 100-continue), sent once the front accepts it (aiohttp's
    low-level server sends none of its own)."""
    from aiohttp import HttpVersion11

    expect = request.headers.get("Expect")
    if expect is None or request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return Refusal(f"Expect {expect[:32]!r} is not supported", "framing")
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None


def _metrics_handler(cfg: FrontConfig, counters: FrontCounters):
    """The metrics port's request handler (GET and HEAD /metrics, anything else 404) and the upstream it holds."""
    from aiohttp import web

    triton = Upstream(cfg.triton_metrics)

    async def metrics(request: web.BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD") or request.path != "/metrics":
            return _refused(counters, "metrics", Refusal(f"{request.method[:16]} {request.path[:80]} is not served: "
                                                         "this port answers GET and HEAD /metrics", "route"), 404)
        try:
            answer = await triton.request("GET", "/metrics", {}, None, cfg.pass_timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError) as e:
            return web.Response(status=503, text=f"metrics unavailable ({type(e).__name__})\n{counters.text()}")
        return web.Response(status=answer.status, body=answer.body + counters.text().encode(),
                            content_type="text/plain")

    return metrics, triton


class _Refused(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed at once, so it holds no file descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
                        b"Retry-After: 1\r\n\r\n")
        transport.close()


@dataclass
class _Connections:
    """What the HTTP ports' handlers and connections share, by each connection's aiohttp protocol: those with a
    request being answered (`busy`), the body the front is reading or passing on (`reading`), and those whose client
    shut its side while no body was being read (`shut`). aiohttp may have parsed a request whose handler has not run
    yet: a body its handler starts on a `shut` connection is whole already, or abandoned."""

    busy: set[Any] = field(default_factory=set)
    reading: dict[Any, Any] = field(default_factory=dict)
    shut: set[Any] = field(default_factory=set)


class _Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol, passed every event but the end of the client's sending. A client
    that sent its request and then shut its side (a half-close) still gets the answer: the connection stays open
    for the request in hand, takes no further one, and closes once it is answered; one with no request in hand
    by LINGER_S later closes then. A client that shuts its side in the middle of a body has abandoned it: the
    connection closes at once and the partial body is released (a body counts as whole once aiohttp has all of its
    bytes, read by the front or not)."""

    def __init__(self, inner: Any, conns: _Connections):
        self.inner, self.conns = inner, conns
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        body = self.conns.reading.get(self.inner)
        if body is not None and not body.is_eof():
            return self.inner.eof_received()  # None: the transport closes
        self.conns.shut.add(self.inner)
        self.inner.close()  # no further request; the one in hand is answered first
        asyncio.get_running_loop().call_later(LINGER_S, self._close_if_idle)
        return True

    def _close_if_idle(self) -> None:
        if self.inner not in self.conns.busy and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conns.shut.discard(self.inner)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def _listen(runner: Any, host: str, port: int, cap: int, name: str, counters: FrontCounters,
                  conns: _Connections) -> asyncio.Server:
    """The runner's HTTP server on `host:port`, at most `cap` connections at once (refusals counted as `name`'s)."""
    server = runner.server

    def protocol() -> asyncio.BaseProtocol:
        if len(server.connections) >= cap:
            counters.reject(name, Refusal("", "connections"))
            return _Refused()
        return _Connection(server(), conns)

    return await asyncio.get_running_loop().create_server(protocol, host or None, port, reuse_address=True)


async def start_http(cfg: FrontConfig, counters: FrontCounters,
                     budget: ByteBudget) -> tuple[list[Any], list[asyncio.Server]]:
    """The HTTP and metrics ports, listening: ((aiohttp runner, upstream) of each, their listeners)."""
    from aiohttp import web

    conns = _Connections()
    runners, listeners = [], []
    for (handler, upstream), port, cap, name in (
            (_http_handler(cfg, counters, budget, conns), cfg.http_port, cfg.max_connections, "http"),
            (_metrics_handler(cfg, counters), cfg.metrics_port, METRICS_CONNECTIONS, "metrics")):
        # aiohttp's low-level server: no router or `100 Continue` of its own, every parsed request reaches `handler`.
        # auto_decompress off: a compressed body is never inflated here, on any route (the inference route refuses
        # one before reading it; a body on another route, never read, is still drained after the answer)
        server = web.Server(handler, access_log=None, logger=_ServerLog(name, counters),
                            keepalive_timeout=cfg.keepalive_s, lingering_time=LINGER_S, read_bufsize=READ_BUFSIZE,
                            auto_decompress=False)
        runner = web.ServerRunner(server, shutdown_timeout=cfg.shutdown_s)
        await runner.setup()
        listeners.append(await _listen(runner, cfg.host, port, cap, name, counters, conns))
        runners.append((runner, upstream))
    return runners, listeners


async def stop_http(runners: list[Any], listeners: list[asyncio.Server]) -> None:
    """No new connection; idle keep-alive connections are closed at once, requests in flight get `shutdown_s`."""
    for listener in listeners:
        listener.close()
    await asyncio.gather(*(runner.cleanup() for runner, _ in runners))
    for _, upstream in runners:
        upstream.close()
