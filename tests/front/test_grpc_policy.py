"""The checks of a gRPC ModelInfer request (grpc_policy.py), without a server: counts from the wire fields before
anything is parsed, every field but the raw contents bounded, then parsed and checked."""

from __future__ import annotations

import tracemalloc

import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra is not installed")

from videoitg.contract.protocol import DECODE, TOP
from videoitg.front.grpc_policy import grpc_checked, grpc_infer_error, grpc_scan
from videoitg.front.policy import Reason

MODELS = (TOP,)
OVERFLOW = [1, 2**27, 2**35, 1]  # 2^64 bytes of FP32: 0 in Triton 2.51's int64 size check


def _refusal(raw: bytes, models: tuple[str, ...], **limits: int):
    """Why the front refuses a serialized ModelInferRequest, or None."""
    return grpc_checked(raw, models, **limits)[0]


def test_grpc_infer_refusals() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")

    req = service_pb2.ModelInferRequest(model_name=DECODE)
    assert "is not served" in grpc_infer_error(req, MODELS)
    req = service_pb2.ModelInferRequest(model_name=TOP)
    req.inputs.add(name="VIDEO", datatype="BYTES").shape.extend(OVERFLOW)
    assert "2^40 elements" in grpc_infer_error(req, MODELS)
    ok = service_pb2.ModelInferRequest(model_name=TOP)
    ok.inputs.add(name="VIDEO", datatype="BYTES").shape.extend([1, 1])
    assert grpc_infer_error(ok, MODELS) is None
    ok.model_version = "3"
    assert grpc_infer_error(ok, MODELS) is None
    ok.model_version = "9" * 100_000  # as HTTP's path: a version number, or none
    assert "model_version '999" in grpc_infer_error(ok, MODELS)
    ok.model_version = ""
    ok.inputs[0].shape.extend([1] * 1_000_000)  # counted before the shape is copied
    assert "1000002 dimensions" in grpc_infer_error(ok, MODELS)


def test_grpc_fields_but_the_raw_contents_are_bounded_before_they_are_parsed() -> None:
    """A message of an input whose shape, contents or parameters hold millions of entries: every field but the raw
    contents is parsed whole, so together they are bounded like the HTTP JSON header; the raw contents are not."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")
    big = service_pb2.ModelInferRequest(model_name=TOP)
    big.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1]).contents.bytes_contents.extend([b""] * 600_000)
    err, head, _ = grpc_scan(big.SerializeToString(), MODELS)
    assert err is not None and err.reason is Reason.HEADER_SIZE and "raw_input_contents" in err and head == b""
    raw = service_pb2.ModelInferRequest(model_name=TOP)
    raw.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    raw.raw_input_contents.append(b"v" * (4 << 20))
    err, head, n_raw = grpc_scan(raw.SerializeToString(), MODELS)
    assert err is None and n_raw == 1 and len(head) < 100


def test_grpc_counts_come_before_any_input_is_looked_at() -> None:
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2", reason="the serve extra is not installed")

    # 3 million empty inputs in 5.7 MiB: parsed whole, 3.3 GB of the front's memory and ~10 s of Python looping.
    nine = service_pb2.ModelInferRequest(model_name=TOP).SerializeToString() + b"\x2a\x00" * 9
    # The scan stops at the 9th input: what follows is never read, not even a field running past the message's end
    # (a whole parse calls that malformed).
    assert "more inputs than the 8" in _refusal(nine + b"\x2a\xff\xff\xff\x0f", MODELS, max_inputs=8)
    raw = nine + b"\x2a\x00" * 3_000_000
    tracemalloc.start()
    try:
        err = _refusal(raw, MODELS, max_inputs=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert err is not None and "more inputs than the 8" in err
    assert peak < 1 << 20, f"{peak >> 10} KiB allocated scanning"
    assert "is not served" in _refusal(
        service_pb2.ModelInferRequest(model_name=DECODE).SerializeToString() + b"\x2a\x00", MODELS)
    assert "malformed" in _refusal(b"\x2a\x05ab", MODELS)
    named = service_pb2.ModelInferRequest(model_name=TOP).SerializeToString()
    assert "malformed ModelInfer request" in _refusal(named + b"\x2a\x02\xff\xff", MODELS)  # the scan
    # passes an input whose bytes protobuf cannot read
    assert "more than" in _refusal(b"\x18\x01" * 1_000_000, MODELS)  # any other field, repeated
    assert "no inputs" in _refusal(service_pb2.ModelInferRequest(model_name=TOP).SerializeToString(),
                                             MODELS)
    many = service_pb2.ModelInferRequest(model_name=TOP)
    for _ in range(20):
        many.inputs.add()
    assert "20 inputs, more than the 8" in grpc_infer_error(many, MODELS, max_inputs=8)
    extra = service_pb2.ModelInferRequest(model_name=TOP)
    for name in ("VIDEO", "INSTRUCTION"):
        extra.inputs.add(name=name, datatype="BYTES").shape.extend([1, 1])
    extra.raw_input_contents.extend([b"a", b"b", b"c"])
    assert "3 raw_input_contents for 2 inputs" in grpc_infer_error(extra, MODELS)
    assert "3 raw_input_contents for 2 inputs" in _refusal(extra.SerializeToString(), MODELS)
    del extra.raw_input_contents[2]
    assert grpc_infer_error(extra, MODELS) is None
    extra.parameters["sequence_id"].int64_param = 5
    assert _refusal(extra.SerializeToString(), MODELS) is None
    err, head, n_raw = grpc_scan(extra.SerializeToString(), MODELS)  # the checks parse all but the raw bytes
    parsed = service_pb2.ModelInferRequest.FromString(head)
    assert err is None and n_raw == 2 and not parsed.raw_input_contents
    assert parsed.model_name == TOP and parsed.inputs == extra.inputs and parsed.parameters == extra.parameters
    assert grpc_infer_error(parsed, MODELS, n_raw=3) is not None and grpc_infer_error(parsed, MODELS,
                                                                                       n_raw=2) is None
    extra.parameters["priority"].int64_param = -1
    assert "'priority' must be a non-negative" in grpc_infer_error(extra, MODELS)
    extra.parameters["priority"].uint64_param = 1
    extra.parameters["x"].double_param = float("nan")
    assert "finite" in grpc_infer_error(extra, MODELS)
    del extra.parameters["x"]
    extra.inputs[0].parameters["shared_memory_region"].string_param = "r"
    assert "shared memory" in grpc_infer_error(extra, MODELS)
    long_name = service_pb2.ModelInferRequest(model_name=TOP)
    long_name.inputs.add(name="n" * 65_536, datatype="BYTES").shape.extend([1, 1])
    err = grpc_infer_error(long_name, MODELS)
    assert err is not None and "1-256 characters" in err and len(err) < 200
