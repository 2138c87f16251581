"""The top-level model (`videoitg_bls`) on the real tritonserver: every bad request gets a clear error naming what was
wrong and the server keeps serving; the configured byte and token limits; a bad request never fails its batch mates;
the metrics count successes and failures. The session's CPU server runs with two small limits (`LIMITS`)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from tests.support.compare import assert_results_close
from tests.support.server import (
    CPU_LIMITS,
    grpc_infer,
    metric_value,
    skip_without_tritonserver,
)
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.request.text import encode_instruction

pytestmark = pytest.mark.server
LIMITS = CPU_LIMITS

skip_without_tritonserver()


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00", " \ufeff\n"])
def test_instruction_of_invisible_characters_is_refused(text, clients, sample) -> None:
    path, _, _ = sample
    with pytest.raises(RemoteError, match="INSTRUCTION: instruction is empty"):
        clients["grpc"].infer(path, text)


BAD_REQUESTS = {
    "missing input": ({"VIDEO": "ok"}, "INSTRUCTION"),
    "wrong dtype": ({"VIDEO": "ok", "INSTRUCTION": (np.array([[3]], np.int32), "INT32")}, "INSTRUCTION"),
    "wrong shape": ({"VIDEO": (np.array([[b"a", b"b"]], object), "BYTES"), "INSTRUCTION": "ok"}, "VIDEO"),
    "corrupt video": ({"VIDEO": (np.array([[b"\x00garbage" * 64]], object), "BYTES"), "INSTRUCTION": "ok"},
                      "NotAVideoError"),
    "empty video": ({"VIDEO": (np.array([[b""]], object), "BYTES"), "INSTRUCTION": "ok"},
                    "VIDEO: video input is empty"),
    "empty instruction": ({"VIDEO": "ok", "INSTRUCTION": (np.array([[b"   "]], object), "BYTES")},
                          "INSTRUCTION: instruction is empty"),
    "over-long instruction": ({"VIDEO": "ok", "INSTRUCTION": (np.array([[b"word " * 6000]], object), "BYTES")},
                              "max_instruction_tokens=32"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_clear_error_and_server_keeps_serving(case, server, clients, sample) -> None:
    path, data, instruction = sample
    spec, expect = BAD_REQUESTS[case]
    good = {"VIDEO": (np.array([[data]], object), "BYTES"),
            "INSTRUCTION": (np.array([[instruction.encode()]], object), "BYTES")}
    inputs = {k: (good[k] if v == "ok" else v) for k, v in spec.items()}
    with pytest.raises(InferenceServerException, match=expect):
        grpc_infer(server, inputs)
    assert clients["grpc"].infer(path, instruction).result.logits  # the next request is served


def test_video_over_the_configured_byte_limit_is_refused(clients, sample) -> None:
    """The repository's MAX_VIDEO_BYTES reaches the server: refused before hashing or decoding, naming the limit."""
    path, data, instruction = sample
    big = data + b"\x00" * (LIMITS.decode.max_bytes + 1 - len(data))  # a real video, one byte over the limit
    for c in clients.values():
        with pytest.raises(RemoteError, match=r"VideoTooLargeError: VIDEO: video input is 1048577 bytes, over the "
                                              r"1048576 byte limit \(max_video_bytes\)") as ei:
            c.infer(big, instruction)
        assert str(ei.value.status) in ("StatusCode.INVALID_ARGUMENT", "400"), ei.value.status
    assert clients["grpc"].infer(path, instruction).result.logits  # the next request is served


def test_compressed_body_is_refused_before_tritonserver_inflates_it(server, clients, sample) -> None:
    """An HTTP body with Content-Encoding: gzip (8 MiB of video in ~8 KB on the wire) is refused by the front with
    400 naming the encoding: tritonserver 2.51 would inflate it whole before any check. The server keeps serving and
    its shared memory does not grow."""
    path, data, instruction = sample

    def shm_bytes() -> int:
        return sum(f.stat().st_size for f in Path("/dev/shm").glob(f"{server.shm_prefix}*"))

    before, restarts = shm_bytes(), server.restarts  # the session server's: read as deltas
    big = np.array([[b"\x00" * (8 << 20)]], dtype=object)
    c = http.InferenceServerClient(server.http_url)
    try:
        ins = [http.InferInput("VIDEO", [1, 1], "BYTES"), http.InferInput("INSTRUCTION", [1, 1], "BYTES")]
        ins[0].set_data_from_numpy(big)
        ins[1].set_data_from_numpy(np.array([[instruction.encode()]], dtype=object))
        for _ in range(3):
            with pytest.raises(InferenceServerException, match="Content-Encoding 'gzip' is not accepted") as e:
                c.infer("videoitg", ins, request_compression_algorithm="gzip")
            assert e.value.status() == "400"
        ins[0].set_data_from_numpy(np.array([[data]], dtype=object))  # a response may still be compressed
        got = c.infer("videoitg", ins, response_compression_algorithm="gzip")
        assert got.as_numpy("SCORES").size > 0
    finally:
        c.close()
    assert clients["http"].infer(path, instruction).result.logits  # the next request is served
    assert shm_bytes() - before <= 0
    assert server.running and server.restarts == restarts


def test_instruction_over_the_configured_token_limit_is_refused(clients, scorer, sample) -> None:
    """MAX_INSTRUCTION_TOKENS reaches the grounding step: 32 tokens pass, 33 are refused naming the limit."""
    path, data, instruction = sample
    n = lambda text: len(encode_instruction(scorer.tokenizer, text))
    words = [f"w{i}" for i in range(64)]
    fits = next(" ".join(words[:k]) for k in range(64, 0, -1) if n(" ".join(words[:k])) <= 32)
    over = next(" ".join(words[:k]) for k in range(1, 65) if n(" ".join(words[:k])) > 32)
    assert n(fits) <= 32 < n(over)
    ok = clients["grpc"].infer(path, fits)
    assert_results_close(ok.result, scorer.score(data, fits))
    for c in clients.values():
        with pytest.raises(RemoteError, match=rf"InstructionTooLongError: instruction has {n(over)} tokens, over "
                                              r"the limit of 32 \(max_instruction_tokens=32") as ei:
            c.infer(path, over)
        assert str(ei.value.status) in ("StatusCode.INVALID_ARGUMENT", "400"), ei.value.status


def test_bad_request_does_not_fail_its_batch_mates(server, scorer, sample) -> None:
    path, data, instruction = sample
    ref = scorer.score(data, instruction)

    def call(i: int):
        with VideoITGClient(server.grpc_url, "grpc") as c:
            try:
                return c.score(b"\x00not a video" * 32 if i % 2 else data, instruction)
            except RemoteError as e:
                return e

    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(call, range(6)))
    for i, g in enumerate(got):
        if i % 2:
            assert isinstance(g, RemoteError) and "NotAVideoError" in str(g)
            assert g.status == "StatusCode.INVALID_ARGUMENT"  # the client's fault, not a server error
        else:
            assert_results_close(g, ref)


def test_metrics_count_successes_and_failures(server, clients, sample) -> None:
    path, _, instruction = sample

    def counts() -> tuple[float, ...]:
        m = server.metrics()
        return (metric_value(m, "videoitg_requests", model="videoitg", outcome="success"),
                metric_value(m, "videoitg_requests", model="videoitg", outcome="failure"),
                metric_value(m, "videoitg_requests", model="videoitg", outcome="rejected", reason="InputError"),
                metric_value(m, "nv_inference_request_success", model="videoitg"),
                metric_value(m, "videoitg_feature_cache_hits", model="videoitg"))

    clients["http"].infer(path, instruction)  # the sample's features are cached from here on
    before = counts()
    assert clients["http"].infer(path, instruction).cache_hit
    with pytest.raises(RemoteError, match="INSTRUCTION: instruction is empty"):
        clients["http"].infer(path, " ")
    # ours: a success, no failure (the service failed nothing) and the client's fault rejected; Triton's: both
    # reached the model; the hit
    want = (1, 0, 1, 2, 1)
    deadline = time.monotonic() + 10
    while True:  # Triton counts a request when it releases it, which may come just after its response
        after = counts()
        got = tuple(a - b for a, b in zip(after, before, strict=True))
        if got == want or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got == want
