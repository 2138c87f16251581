"""Attacks on the served steps with the real tritonserver (CPU, the embedded tiny checkpoint): a client that calls
an internal step directly must not stall the top-level model's own work.

- the public ports serve no step (the front, tests/front/test_served.py); behind them, a stream of direct
  calls to the decode step is still bounded by the step's queue (the deployment's max_in_flight): while one long
  decode holds the step, the excess is refused at once, and an ordinary request is answered once the bounded
  backlog has run.
"""

from __future__ import annotations

import queue
import time

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException

from benchmarks.clips import random_clip, repeat_clip, write_rgb_clip
from tests.support.server import served, skip_without_tritonserver
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.contract.protocol import DECODE
from videoitg.repository.generator import RepoSpec
from videoitg.request.limits import Limits

pytestmark = pytest.mark.server
MAX_IN_FLIGHT = 2

skip_without_tritonserver()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from served(RepoSpec(target="cpu", limits=Limits().replace(max_in_flight=MAX_IN_FLIGHT)), tmp_path_factory)


def slow_clip(tmp_path) -> bytes:
    """A 200 s 720p clip of one still picture with a single keyframe per 10 s: a quarter of a MB that takes seconds
    to decode (every frame up to each sampled one), so the decode step stays busy while a stream's calls arrive."""
    y, x = np.mgrid[0:720, 0:1280]
    still = np.stack([x * 200 // 1280, y * 200 // 720, np.full_like(x, 100)], axis=-1).astype(np.uint8)
    segment = write_rgb_clip(tmp_path / "still.mp4", (still for _ in range(250)), codec="libx264", fps=25, gop=250,
                             options={"crf": "40"})
    return repeat_clip(segment, tmp_path / "slow.mp4", 20).read_bytes()


def test_a_stream_of_direct_decode_calls_is_bounded_by_the_steps_queue(server, tmp_path) -> None:
    """Direct calls are refused on the public port; behind it they do not queue without bound (unbounded, a stream
    of them made an unrelated cold request wait ~10 s, and cancelling the stream left the queued decodes to run).
    The stream opens with a long decode, so no call's decode ends while the others arrive (with short ones only, a
    busy machine finished some in between and the step took more than its bound's worth)."""
    video = random_clip(tmp_path / "a.mp4", seed=1)
    t = grpc.InferInput("VIDEO", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[video]], dtype=object))
    with grpc.InferenceServerClient(server.grpc_url) as public, pytest.raises(InferenceServerException,
                                                                              match="is not served"):
        public.infer(DECODE, [t])
    answers: queue.SimpleQueue = queue.SimpleQueue()
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # behind the front, with the key only the front holds
    n = 6 * MAX_IN_FLIGHT
    slow = slow_clip(tmp_path)
    try:
        c.start_stream(callback=lambda result, error: answers.put(error), headers=server.inference_headers("grpc"))
        for k in range(n):
            t = grpc.InferInput("VIDEO", [1, 1], "BYTES")
            t.set_data_from_numpy(np.array([[slow if k == 0 else video]], dtype=object))
            c.async_stream_infer(DECODE, [t])
        refused, deadline = 0, time.monotonic() + 30
        while refused < n - MAX_IN_FLIGHT - 1 and time.monotonic() < deadline:
            try:
                e = answers.get(timeout=1)
            except queue.Empty:
                continue
            refused += e is not None and "Exceeds maximum queue size" in str(e)
        assert refused >= n - MAX_IN_FLIGHT - 1, f"{refused} of {n} refused"  # one executes, the queue holds the rest
    finally:
        c.stop_stream(cancel_requests=True)
        c.close()
    # The backlog is bounded: once the at most MAX_IN_FLIGHT accepted decodes have run, an ordinary cold request is
    # answered (while the queue is full the top level's own decode is refused too: UNAVAILABLE, retried here).
    clip = random_clip(tmp_path / "b.mp4", seed=2)
    with VideoITGClient(server.grpc_url, "grpc") as client:
        deadline = time.monotonic() + 30
        while True:
            try:
                result = client.infer(clip, "a person walks")
                break
            except RemoteError as e:
                assert "Exceeds maximum queue size" in str(e) and time.monotonic() < deadline, e
                time.sleep(0.5)
        assert len(result.result.logits) > 0
