"""The checks of a gRPC ModelInfer request (pure functions, unit-tested without a server): its model and counts
from its wire fields before anything is parsed, then every field but the raw contents, as `policy.py` checks an
HTTP request's JSON header; the methods the gRPC port passes on, and its `grpc-timeout` and `grpc-message`
headers. Needs the serve extra (tritonclient's protobuf classes)."""

from __future__ import annotations

import math
import re
from typing import Any

from tritonclient.grpc import service_pb2

from videoitg.front.policy import (
    DEFAULT_MAX_TENSORS,
    MAX_DIMS,
    MAX_HEADER_BYTES,
    MAX_PARAMETER_CHARS,
    MAX_PARAMETERS,
    Reason,
    Refusal,
    model_error,
    name_error,
    shape_error,
)

SERVICE = "inference.GRPCInferenceService"
# The gRPC calls passed on (the rest, model control, shared memory, logging and trace, are answered UNIMPLEMENTED)
GRPC_METHODS = ("ServerLive", "ServerReady", "ServerMetadata", "ModelReady", "ModelMetadata", "ModelConfig",
                "ModelStatistics", "ModelInfer")
HEALTH_METHODS = ("ServerLive", "ServerReady", "ModelReady")  # liveness and readiness checks


def key_exempt_grpc(service: str, method: str) -> bool:
    """Whether a gRPC call needs no key (`policy.key_exempt_http`'s rule): liveness and readiness."""
    return service == SERVICE and method in HEALTH_METHODS
_VERSION = re.compile(r"[0-9]{0,19}")  # gRPC's model_version: empty (the policy's choice) or a version number
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")  # grpc-timeout, as the gRPC HTTP/2 protocol defines it
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


def grpc_timeout(value: bytes | None) -> float | None | Refusal:
    """Seconds of a `grpc-timeout` header (None without one), or why it is malformed."""
    if value is None:
        return None
    if (m := _TIMEOUT.fullmatch(value)) is None:
        return Refusal(f"malformed grpc-timeout {value[:16]!r}", Reason.STRUCTURE)
    return int(m.group(1)) * _UNITS[m.group(2)]


def grpc_message(text: str) -> bytes:
    """`grpc-message`: UTF-8, percent-encoded outside printable ASCII and for '%' itself."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode())


def grpc_parameters_error(where: str, params: Any) -> Refusal | None:
    """A gRPC `parameters` map: bounded, no shared memory, the typed ones as Triton reads them, finite numbers."""
    if len(params) > MAX_PARAMETERS:
        return Refusal(f"{where}'parameters' has {len(params)} entries, more than {MAX_PARAMETERS}", Reason.PARAMETERS)
    for key, p in params.items():
        shown = key[:64]
        if key.startswith("shared_memory"):
            return Refusal(f"{where}parameter '{shown}': shared memory is not served", Reason.PARAMETERS)
        choice = p.WhichOneof("parameter_choice")
        value = getattr(p, choice) if choice else None
        if key in ("priority", "timeout") and not (choice in ("int64_param", "uint64_param") and value >= 0):
            return Refusal(f"{where}parameter '{shown}' must be a non-negative integer", Reason.PARAMETERS)
        if choice == "double_param" and not math.isfinite(value):
            return Refusal(f"{where}parameter '{shown}' must be a finite number", Reason.PARAMETERS)
        if choice == "string_param" and len(value) > MAX_PARAMETER_CHARS:
            return Refusal(f"{where}parameter '{shown}' is longer than {MAX_PARAMETER_CHARS} characters",
                           Reason.PARAMETERS)
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


def grpc_checked(raw: bytes, models: tuple[str, ...], max_inputs: int = DEFAULT_MAX_TENSORS,
                 max_outputs: int = DEFAULT_MAX_TENSORS) -> tuple[Refusal | None, str]:
    """(why a serialized ModelInferRequest is refused or None, the model it names): its model name and counts from
    its wire fields first (`grpc_scan`), then every field but the raw contents parsed and checked
    (`grpc_infer_error`). The video's bytes are never parsed or copied here."""
    err, head, n_raw = grpc_scan(raw, models, max_inputs, max_outputs)
    if err is not None:
        return err, ""
    try:
        request = service_pb2.ModelInferRequest.FromString(head)
    except Exception as e:  # protobuf's DecodeError
        return Refusal(f"malformed ModelInfer request ({str(e)[:120]})", Reason.STRUCTURE), ""
    return grpc_infer_error(request, models, max_inputs, max_outputs, n_raw), request.model_name


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
                return Refusal(f"request has more than {most_fields} fields", Reason.STRUCTURE), b"", 0
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
                                   "send tensor data in raw_input_contents", Reason.HEADER_SIZE), b"", 0
                head.append(raw[start:i])
            if number in counts:
                counts[number] += 1
                if counts[5] > max_inputs or counts[6] > max_outputs or counts[7] > max_inputs:
                    what = {5: "inputs", 6: "outputs", 7: "raw_input_contents"}[number]
                    return Refusal(f"request has more {what} than the {max_inputs if number != 6 else max_outputs} "
                                   "the served models declare", Reason.STRUCTURE), b"", 0
    except ValueError as e:
        return Refusal(f"malformed ModelInfer request ({e})", Reason.STRUCTURE), b"", 0
    err = model_error(name, models) or _counts_error(counts[5], counts[6], counts[7], max_inputs, max_outputs)
    return err, b"".join(head), counts[7]


def _counts_error(n_in: int, n_out: int, n_raw: int, max_inputs: int, max_outputs: int) -> Refusal | None:
    if not n_in:
        return Refusal("request has no inputs", Reason.STRUCTURE)
    for key, n, most in (("inputs", n_in, max_inputs), ("outputs", n_out, max_outputs)):
        if n > most:
            return Refusal(f"request has {n} {key}, more than the {most} the served models declare", Reason.STRUCTURE)
    if n_raw and n_raw != n_in:
        return Refusal(f"request has {n_raw} raw_input_contents for {n_in} inputs: give one per input",
                       Reason.STRUCTURE)
    return None


def grpc_infer_error(request: Any, models: tuple[str, ...], max_inputs: int = DEFAULT_MAX_TENSORS,
                     max_outputs: int = DEFAULT_MAX_TENSORS, n_raw: int | None = None) -> Refusal | None:
    """Why a parsed `ModelInferRequest` is refused, or None. Counts first: a message of a few MiB can hold
    millions of empty inputs, and looking at each costs seconds of Python."""
    if (err := model_error(request.model_name, models)) is not None:
        return err
    if _VERSION.fullmatch(request.model_version) is None:
        return Refusal(f"model_version {request.model_version[:24]!r} is not empty or 1-19 ASCII digits", Reason.MODEL)
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
            return Refusal(f"input '{inp.name}' is given twice", Reason.STRUCTURE)
        seen.add(inp.name)
        if len(inp.shape) > MAX_DIMS:  # before the shape is copied: it may hold a million dimensions
            return Refusal(f"input '{inp.name}': shape has {len(inp.shape)} dimensions, more than {MAX_DIMS}",
                           Reason.STRUCTURE)
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
