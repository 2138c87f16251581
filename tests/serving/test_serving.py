"""The real tritonserver (CPU, python backend) serving the embedded tiny checkpoint on free loopback ports.

The session server (conftest's `cpu_server`; starting a server costs more than most of this file's tests).
Served outputs are compared with the in-process `Scorer` on the same video bytes and instruction. The server runs
with two small limits (`LIMITS`: video bytes and instruction tokens) that every other input stays within, so the
limit tests need no server of their own.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

from tests.support import ROOT
from tests.support.compare import SCORED, TOL, assert_moments_close, assert_records_close, assert_results_close
from tests.support.server import (
    CPU_LIMITS,
    CPU_STREAM_FRAMES,
    metric_value,
    read_until,
    skip_without_tritonserver,
    wait_until,
)
from videoitg.cli import main
from videoitg.clips import random_clip
from videoitg.decode import decode_video
from videoitg.defaults import sample_video
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.request.options import RequestOptions
from videoitg.request.text import encode_instruction
from videoitg.serving.client import RemoteError, VideoITGClient
from videoitg.serving.ports import free_ports
from videoitg.serving.shm import SHM_PREFIX, launcher_tag

pytestmark = pytest.mark.server
LIMITS, STREAM_FRAMES = CPU_LIMITS, CPU_STREAM_FRAMES

skip_without_tritonserver()


make_clip = random_clip


@pytest.fixture(scope="module")
def sample():
    path, instruction = sample_video()
    return path, path.read_bytes(), instruction


@pytest.fixture(scope="module")
def server(cpu_server):
    return cpu_server


@pytest.fixture(scope="module")
def clients(server):
    with VideoITGClient(server.grpc_url, "grpc") as g, VideoITGClient(server.http_url, "http") as h:
        yield {"grpc": g, "http": h}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_equals_in_process(protocol, clients, scorer, sample) -> None:
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    out = clients[protocol].infer(path, instruction, RequestOptions(top_k=5))
    assert_results_close(out.result, ref)
    assert out.top_k_frames == out.result.top_k_frames(5)  # the served top-K is the served ranking's
    assert_records_close(out.result.to_record(7, str(path), top_k=5), ref.to_record(7, str(path), top_k=5))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ranking_rule_and_moments_are_served_like_in_process(protocol, clients, scorer, sample) -> None:
    """RANKING_RULE selects the rule per request (the server's default: released), the RANKING_RULE output says
    which one was applied, and MOMENTS are the in-process moments of the same scores."""
    path, data, instruction = sample
    ref = scorer.score(data, instruction)
    assert ref.ranking_rule == "released"
    default = clients[protocol].infer(path, instruction)
    assert default.result.ranking_rule == "released"
    assert_results_close(default.result, ref)
    assert_moments_close(default.moments, ref)
    exact = clients[protocol].infer(path, instruction, RequestOptions(ranking_rule="exact"))
    assert exact.result.ranking_rule == "exact"
    assert_results_close(exact.result, dataclasses.replace(ref, ranking_rule="exact"))
    with pytest.raises(InputError, match='ranking_rule must be one of released, exact, got "best"'):  # before sending
        clients[protocol].infer(path, instruction, RequestOptions(ranking_rule="best"))


@pytest.mark.parametrize("text", ["\u200b\u200b", "\x00", " \ufeff\n"])
def test_instruction_of_invisible_characters_is_refused(text, clients, sample) -> None:
    path, _, _ = sample
    with pytest.raises(RemoteError, match="INSTRUCTION: instruction is empty"):
        clients["grpc"].infer(path, text)


def test_score_command_through_the_server(server, scorer, sample, tmp_path, capsys) -> None:
    """`videoitg score --server` writes the same results.jsonl record as the in-process path, and the plot."""

    path, data, instruction = sample
    out, png = tmp_path / "r.jsonl", tmp_path / "t.png"
    assert main(["score", str(path), "-i", instruction, "--server", server.grpc_url, "--protocol", "grpc",
                 "--top-k", "5", "--doc-id", "3", "--output", str(out), "--plot", str(png)]) == 0
    assert "top-5 in chronological order" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    want = scorer.score(data, instruction).to_record("3", str(path), top_k=5)
    assert_records_close(rec, want, fields=SCORED)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cache_hit_is_identical(clients, scorer, tmp_path) -> None:
    data = make_clip(tmp_path / "fresh.mp4", seed=1)
    c = clients["grpc"]
    first = c.infer(data, "the first question")
    second = c.infer(data, "a second, different question")
    again = c.infer(data, "the first question")
    assert (first.cache_hit, second.cache_hit, again.cache_hit) == (False, True, True)
    assert again.result.logits == first.result.logits  # bit-identical: same features, same instruction
    assert_results_close(second.result, scorer.score(data, "a second, different question"))


def test_a_cached_video_is_named_by_its_digest_and_its_bytes_are_not_sent_again(server, scorer, tmp_path) -> None:
    """A second instruction on a video the server has cached crosses the wire as the video's digest alone
    (VIDEO_DIGEST); a digest the server has not cached is answered NOT_FOUND, and the client then sends the bytes."""

    def outcomes() -> tuple[float, float]:
        m = server.metrics()
        return (metric_value(m, "videoitg_requests", model="videoitg", outcome="failure"),
                metric_value(m, "videoitg_requests", model="videoitg", outcome="not_cached"))

    before = outcomes()
    fresh = video_digest(b"a video no one sent")
    text = (np.array([[b"when?"]], object), "BYTES")
    with pytest.raises(InferenceServerException, match="send VIDEO") as ei:
        _raw_infer(server, {"VIDEO_DIGEST": (np.array([[fresh.encode()]], object), "BYTES"), "INSTRUCTION": text})
    assert ei.value.status() == "StatusCode.NOT_FOUND"
    for seed, protocol in ((5, "grpc"), (6, "http")):
        data = make_clip(tmp_path / f"digest{seed}.mp4", seed=seed)  # a video this server has not seen
        url = server.grpc_url if protocol == "grpc" else server.http_url
        with VideoITGClient(url, protocol, digest_first_bytes=0) as c:
            first = c.infer(data, f"the first question ({protocol})")
            second = c.infer(data, "a second question")
        assert (first.sent_video, first.cache_hit) == (True, False)  # NOT_FOUND, then the bytes
        assert (second.sent_video, second.cache_hit) == (False, True)
        assert_results_close(second.result, scorer.score(data, "a second question"))
    with VideoITGClient(server.grpc_url, "grpc") as c:  # below DIGEST_FIRST_BYTES the bytes go at once
        assert c.infer(data, "a third question").sent_video
    # Three digest probes missed (the raw one and one per protocol): their own outcome, never a failure.
    failures, not_cached = outcomes()
    assert (failures - before[0], not_cached - before[1]) == (0, 3)


def test_concurrent_clients_get_their_own_answers(server, scorer, sample, tmp_path) -> None:
    _, data, instruction = sample
    other = make_clip(tmp_path / "other.mp4", seed=2)
    jobs = [(data if i % 2 else other, f"{instruction} variant {i}") for i in range(8)]
    refs = [scorer.score(v, t) for v, t in jobs]

    def call(i: int):
        with VideoITGClient(server.grpc_url if i % 2 else server.http_url, "grpc" if i % 2 else "http") as c:
            return c.score(*jobs[i])

    with ThreadPoolExecutor(8) as ex:
        got = list(ex.map(call, range(8)))
    for g, r in zip(got, refs, strict=True):
        assert_results_close(g, r)
    assert len({tuple(g.logits) for g in got}) == 8  # each answer belongs to its own instruction


def _raw_infer(server, inputs: dict[str, tuple[np.ndarray, str]], model: str = "videoitg"):
    c = grpc.InferenceServerClient(server.grpc_url if model == "videoitg" else server.internal_grpc_url)
    ins = []
    for name, (arr, dtype) in inputs.items():
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        ins.append(t)
    try:
        return c.infer(model, ins, headers=None if model == "videoitg" else server.inference_headers("grpc"))
    finally:
        c.close()


def _stream_infer(server, inputs: dict[str, tuple[np.ndarray, str]], model: str) -> list:
    """Every answer of a decoupled (streaming) model to one request, in order: results or exceptions."""

    answers: queue.SimpleQueue = queue.SimpleQueue()
    ins = []
    for name, (arr, dtype) in inputs.items():
        t = grpc.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        ins.append(t)
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # a step: behind the front
    got = []
    try:
        c.start_stream(callback=lambda result, error: answers.put(error if error is not None else result),
                       headers=server.inference_headers("grpc"))
        c.async_stream_infer(model, ins, enable_empty_final_response=True)
        while True:
            a = answers.get(timeout=60)
            if not isinstance(a, Exception) and a.get_response().parameters["triton_final_response"].bool_param:
                if a.get_response().outputs:
                    got.append(a)
                return got
            got.append(a)
            if isinstance(a, Exception):
                return got
    finally:
        c.stop_stream()
        c.close()


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
        _raw_infer(server, inputs)
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


def test_step_models_called_directly_check_their_inputs(server, scorer, sample) -> None:
    """A client can reach the step models too: each refuses what the top-level model would never send it, with
    INVALID_ARGUMENT naming the input, and a bad call never fails a good request batched with it."""
    path, data, instruction = sample
    cfg = scorer.config
    s, h = cfg.vision.image_size, cfg.text.hidden_size
    frames = LIMITS.max_sampled_frames + 1
    with pytest.raises(InferenceServerException, match=rf"PIXEL_VALUES holds {frames} frames; 1 to "
                                                       rf"{LIMITS.max_sampled_frames}") as ei:
        _raw_infer(server, {"PIXEL_VALUES": (np.zeros((1, frames, 3, s, s), np.uint8), "UINT8")}, "videoitg_vision")
    assert ei.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=r"unexpected shape for input 'PIXEL_VALUES'"):  # tritonserver's
        _raw_infer(server, {"PIXEL_VALUES": (np.zeros((1, 2, 3, s + 1, s), np.uint8), "UINT8")}, "videoitg_vision")
    with pytest.raises(InferenceServerException, match=r"NUM_FRAMES is 1: the video of a 2-frame chunk"):
        _raw_infer(server, {"PIXEL_VALUES": (np.zeros((1, 2, 3, s, s), np.uint8), "UINT8"),
                            "NUM_FRAMES": (np.array([[1]], np.int64), "INT64")}, "videoitg_vision")
    (empty,) = _stream_infer(server, {"VIDEO": (np.array([[b""]], object), "BYTES")}, "videoitg_decode")
    assert isinstance(empty, InferenceServerException) and "video input is empty" in str(empty), empty

    # Grounding: mis-sized features sent at the same time as a well-formed request.
    feats = scorer.stream_features(data)
    good = {"FEATURES": (feats.visual[None].numpy(), "FP32"),
            "INSTRUCTION": (np.array([[instruction.encode()]], object), "BYTES")}
    t = feats.visual.shape[0]
    bad_shapes = {
        "tokens": np.zeros((1, t, feats.visual.shape[1] + 1, h), np.float32),
        "hidden": np.zeros((1, t, feats.visual.shape[1], h + 1), np.float32),
        "nan": np.full((1, t, feats.visual.shape[1], h), np.nan, np.float32),
    }
    # The width is the checkpoint's: tritonserver refuses another itself (tests/serving/test_step_shapes.py).
    messages = {"tokens": "FEATURES of", "hidden": "unexpected shape for input 'FEATURES'", "nan": "NaN or infinite"}

    def call(job):
        name, inputs = job
        try:
            return name, _raw_infer(server, inputs, "videoitg_grounding")
        except InferenceServerException as e:
            return name, e

    jobs = [("good", good)] + [(k, {**good, "FEATURES": (v, "FP32")}) for k, v in bad_shapes.items()] + [
        ("good", good)]
    with ThreadPoolExecutor(len(jobs)) as ex:
        got = list(ex.map(call, jobs))
    ref = scorer.score(data, instruction)
    for name, out in got:
        if name == "good":
            assert np.abs(out.as_numpy("LOGITS")[0] - np.asarray(ref.logits)).max() <= TOL
        else:
            assert isinstance(out, InferenceServerException) and messages[name] in str(out), (name, out)
            assert out.status() == "StatusCode.INVALID_ARGUMENT", (name, out.status())


def test_decode_step_streams_chunks_that_the_vision_step_encodes_as_the_whole_video(server, scorer, sample) -> None:
    """The streaming decode step answers STREAM_FRAMES frames at a time with the video's frame count, the frame
    numbers last; its chunks are the whole decode's frames, and the vision step's features of the chunks (each
    with NUM_FRAMES) are the whole video's."""
    path, data, _ = sample
    answers = _stream_infer(server, {"VIDEO": (np.array([[data]], object), "BYTES")}, "videoitg_decode")
    assert not any(isinstance(a, Exception) for a in answers), answers
    chunks, last = answers[:-1], answers[-1]
    frames = decode_video(data, image_size=scorer.config.vision.image_size, output="uint8")
    t = len(frames)
    assert [c.as_numpy("PIXEL_VALUES").shape[1] for c in chunks] == [STREAM_FRAMES] * (t // STREAM_FRAMES) + (
        [t % STREAM_FRAMES] if t % STREAM_FRAMES else [])
    assert len(chunks) > 2 and all(int(c.as_numpy("NUM_FRAMES")[0, 0]) == t for c in chunks)
    assert np.array_equal(np.concatenate([c.as_numpy("PIXEL_VALUES")[0] for c in chunks]),
                          frames.pixel_values.numpy())
    assert last.as_numpy("FRAME_INDICES")[0].tolist() == frames.frame_indices
    assert last.as_numpy("TIMESTAMPS")[0].tolist() == frames.timestamps

    feats = [_raw_infer(server, {"PIXEL_VALUES": (c.as_numpy("PIXEL_VALUES"), "UINT8"),
                                 "NUM_FRAMES": (c.as_numpy("NUM_FRAMES"), "INT64")}, "videoitg_vision")
             .as_numpy("FEATURES")[0] for c in chunks]
    whole = scorer.stream_features(data).visual.numpy()
    assert np.abs(np.concatenate(feats) - whole).max() <= TOL


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


ECHO = '''
import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor("Y", pb_utils.get_input_tensor_by_name(r, "X")
                .as_numpy() * 2)]) for r in requests]
'''


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_command_stops_cleanly_on_signal(sig, tmp_path) -> None:
    """`videoitg serve` on a one-model repository: ready, serves, and exits 0 on SIGINT/SIGTERM."""
    (tmp_path / "echo" / "1").mkdir(parents=True)
    (tmp_path / "echo" / "1" / "model.py").write_text(ECHO)
    (tmp_path / "echo" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\ninput [{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
        'output [{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }]\n')
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoitg", "serve", "--model-repository", str(tmp_path), "--http-port", ports[0],
         "--grpc-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        lines = read_until(proc, "ready:")
        assert any(x.startswith("ready:") for x in lines), "".join(lines)
        body = b'{"inputs":[{"name":"X","shape":[2],"datatype":"FP32","data":[1.5,2]}]}'
        req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/v2/models/echo/infer", data=body)
        with urllib.request.urlopen(req, timeout=30) as r:
            assert b"[3.0,4.0]" in r.read()
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# It marks that it runs (a file `started` beside its model.py), then takes 30 s.
SLOW = ECHO.replace("    def execute(self, requests):\n", "    def execute(self, requests):\n        import pathlib\n"
                    "        import time\n\n        pathlib.Path(__file__).with_name('started').touch()\n"
                    "        time.sleep(30)\n")


def test_serve_command_sigterm_with_a_request_in_flight(tmp_path) -> None:
    """SIGTERM to `videoitg serve` while a 30 s request runs: the launcher stops within its bounded time, exits 0,
    the client gets an answer or an error (not a hang), and no shared memory of this server is left."""

    for name, code in (("echo", ECHO), ("slow", SLOW)):
        (tmp_path / name / "1").mkdir(parents=True)
        (tmp_path / name / "1" / "model.py").write_text(code)
        (tmp_path / name / "config.pbtxt").write_text(
            'backend: "python"\nmax_batch_size: 0\ninput [{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }]\n'
            'output [{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }]\n')
    ports = [str(p) for p in free_ports(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "videoitg", "serve", "--model-repository", str(tmp_path), "--http-port", ports[0],
         "--grpc-port", ports[1], "--metrics-port", ports[2], "--echo-log"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    outcome: list[object] = []
    try:
        read_until(proc, "ready:")
        assert proc.poll() is None, "videoitg serve did not start"
        prefix = f"{SHM_PREFIX}{launcher_tag().split('.')[0]}.{proc.pid}_"
        assert any(Path("/dev/shm").glob(f"{prefix}*")), "the server's shared memory is not where expected"

        def call() -> None:
            body = b'{"inputs":[{"name":"X","shape":[1],"datatype":"FP32","data":[1]}]}'
            req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}/v2/models/slow/infer", data=body)
            try:
                with urllib.request.urlopen(req, timeout=60) as r:
                    outcome.append(r.status)
            except Exception as e:
                outcome.append(e)

        t = threading.Thread(target=call)
        t.start()
        started = tmp_path / "slow" / "1" / "started"
        assert wait_until(started.exists, 60), "the request did not reach the slow model in 60 s"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=40)
        said = proc.stdout.read()
        assert code == 0, said  # the stop cancelled what was still running: what it was asked to do
        assert "requests still running at the exit timeout were cut" in said, said
        assert "Exit timeout expired" in said, said  # --echo-log: Triton's own log reached stdout
        stopped_s = time.monotonic() - t0
        t.join(timeout=30)
        assert outcome, "the in-flight request neither answered nor failed"
        assert stopped_s < 25, f"stop took {stopped_s:.1f} s"
        assert not list(Path("/dev/shm").glob(f"{prefix}*")), "shared memory left behind"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_wrong_protocol_gets_a_hint_and_moments_match(server, scorer, sample) -> None:
    """The HTTP port with gRPC (and back) is named as such, with the flag to use; served moments equal in-process."""
    path, data, instruction = sample
    with VideoITGClient(server.http_url, "grpc") as c, pytest.raises(RemoteError, match="--protocol http"):
        c.infer(data, instruction)
    with VideoITGClient(server.grpc_url, "http") as c, pytest.raises(RemoteError, match="--protocol grpc"):
        c.infer(data, instruction)
    with VideoITGClient(server.grpc_url, "grpc") as c:
        served = c.score(data, instruction)
    # The same spans; scores equal to float rounding (this server's tower runs 5-frame chunks, in-process 64).
    assert_moments_close(served.moments, scorer.score(data, instruction))


def test_perf_command_runs_perf_analyzer_with_real_videos(server, sample, tmp_path, capsys) -> None:
    """`videoitg perf`: no library path or input file set by hand; perf_analyzer reports a measured row."""
    path, _, instruction = sample
    rc = main(["perf", str(path), "--server", server.grpc_url, "-i", instruction, "--concurrency", "1:1",
               "--measurement-interval", "1000", "--stability", "100", "--max-trials", "40", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    row = [ln.split() for ln in out.splitlines() if ln.strip().startswith("1 ")][-1]
    assert float(row[1]) > 0  # inferences per second
    assert (tmp_path / "input.json").is_file() and (tmp_path / "perf.csv").is_file()
