"""How the top-level model schedules requests, on the real tritonserver: a cache hit is answered while another
request's video is still decoding, concurrent requests on one video share one decode, a video that failed for its
own sake is refused again without another decode, and on a CPU the model and its decode step do all this without
torch.

The repository is the generated CPU one, except that the top-level model's `decode_model` parameter names a decode
step that takes DELAY_S longer per call (the real decode step, subclassed): it makes "a decode is in flight" last long
enough to observe. Decode calls are counted from the decode step's own `videoitg_requests` metric.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc

from benchmarks.clips import random_clip
from tests.support.server import metric_value, start, stub_pids, wait_until
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.contract.protocol import DECODE, TOP
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec, build_repository

pytestmark = pytest.mark.server
DELAY_S = 3.0
SLOW = "videoitg_decode_slow"
DECODED = "decoded"  # beside the slow step's model.py: a line per video it began to decode
SLOW_MODEL = f'''
import time
from pathlib import Path

from videoitg.python_backend.decode import TritonPythonModel as Decode


class TritonPythonModel(Decode):
    def execute(self, requests):
        time.sleep({DELAY_S})
        return super().execute(requests)

    def _video(self, request):
        with Path(__file__).with_name("{DECODED}").open("a") as f:
            f.write("video\\n")
        return super()._video(request)
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """The module's own server, not a shared one: its repository's decode step is a slow stand-in (DELAY_S), and its
    tests read the top level's in-flight gauges as absolute values."""
    repo = build_repository(RepoSpec(target="cpu"), tmp_path_factory.mktemp("repo"))
    (repo / DECODE).rename(repo / SLOW)  # the real step is not loaded: one python stub fewer
    cfg = repo / SLOW / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace(f'name: "{DECODE}"', f'name: "{SLOW}"'))
    (repo / SLOW / "1" / "model.py").write_text(SLOW_MODEL)
    top = repo / TOP / "config.pbtxt"
    text, n = re.subn(r'(key: "decode_model"\s*value \{\s*string_value: )"[^"]*"', rf'\1"{SLOW}"', top.read_text())
    assert n == 1
    top.write_text(text)
    srv = start(TritonServer(repo, ServerOptions(), log_path=tmp_path_factory.mktemp("log") / "server.log"))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    d = tmp_path_factory.mktemp("clips")
    return [random_clip(d / f"{i}.mp4", seed=7000 + i) for i in range(4)]


def metrics(server: TritonServer) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as r:
        return r.read().decode()


def gauge(server: TritonServer, name: str) -> float:
    m = re.search(rf'{name}{{model="{TOP}"}} (\S+)', metrics(server))
    assert m, name
    return float(m.group(1))


def decode_calls(server: TritonServer) -> dict[str, float]:
    """The decode step's answered requests by outcome (its own counter; the slow step keeps the name)."""
    page = metrics(server)
    return {o: metric_value(page, "videoitg_requests", model=DECODE, outcome=o) for o in ("success", "failure",
                                                                                          "rejected")}


def timed(server: TritonServer, video: bytes, instruction: str, log: dict[str, object], name: str) -> None:
    with VideoITGClient(server.grpc_url, "grpc") as c:
        try:
            log[name] = c.infer(video, instruction)
        except RemoteError as e:
            log[name] = e
    log[name + "_done"] = time.monotonic()


def test_cache_hit_is_answered_while_another_video_decodes(server: TritonServer, clips: list[bytes]) -> None:
    """Catches: a top-level model that runs one batch at a time, so a hit sent during a cold request's decode waited
    for that decode (59 s behind a slow one)."""
    warm, cold = clips[0], clips[1]
    with VideoITGClient(server.grpc_url, "grpc") as c:
        assert not c.infer(warm, "a red circle").cache_hit
    log: dict[str, object] = {}
    t_cold = threading.Thread(target=timed, args=(server, cold, "a red circle", log, "cold"))
    t_cold.start()
    # The load signal: Triton's own pending count stays near zero, these gauges do not. The cold request is in its
    # decode (DELAY_S) once they count it.
    wait_until(lambda: gauge(server, "videoitg_cold_videos_in_flight") >= 1, 30)
    assert gauge(server, "videoitg_cold_videos_in_flight") == 1
    assert gauge(server, "videoitg_requests_in_flight") == 1
    timed(server, warm, "a blue square", log, "hit")
    assert "cold_done" not in log, "the hit was answered only after the cold request"
    t_cold.join()
    assert log["hit"].cache_hit and not log["cold"].cache_hit
    assert log["hit_done"] < log["cold_done"]
    assert gauge(server, "videoitg_requests_in_flight") == gauge(server, "videoitg_cold_videos_in_flight") == 0
    assert gauge(server, "videoitg_requests_waiting") == 0  # the line's gauge is there, and empty


def test_concurrent_requests_on_one_video_share_one_decode(server: TritonServer, clips: list[bytes]) -> None:
    before = decode_calls(server)
    log: dict[str, object] = {}
    threads = [threading.Thread(target=timed, args=(server, clips[2], f"object {i}", log, str(i))) for i in range(3)]
    for t in threads:  # apart in time: separate batches, one computation
        t.start()
        time.sleep(0.3)
    for t in threads:
        t.join()
    results = [log[str(i)] for i in range(3)]
    assert all(not isinstance(r, Exception) for r in results), results
    assert decode_calls(server)["success"] - before["success"] == 1
    frames = [r.result.frame_indices for r in results]
    assert frames[1:] == [frames[0]] * 2


def test_a_video_that_failed_is_refused_again_without_another_decode(server: TritonServer) -> None:
    """Catches: the same bad bytes decoded again (up to the whole decode budget) on every retry."""
    junk = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64
    before = decode_calls(server)
    errors: list[RemoteError] = []
    with VideoITGClient(server.grpc_url, "grpc") as c:
        for video in (junk, junk, junk, junk[:-1]):  # the last: other bytes, decoded
            with pytest.raises(RemoteError) as e:
                c.infer(video, "a red circle")
            errors.append(e.value)
    assert all("INVALID_ARGUMENT" in str(e.status) for e in errors), [e.status for e in errors]
    assert str(errors[1]) == str(errors[0]) == str(errors[2])
    assert decode_calls(server)["rejected"] - before["rejected"] == 2  # not a video: the client's fault


def test_on_a_cpu_the_top_level_model_and_the_decode_step_never_load_torch(server: TritonServer,
                                                                          clips: list[bytes]) -> None:
    """PyAV's frames are numpy arrays in the decode step, and float32 features in host memory stay numpy arrays in
    the top-level model (its cache, a streamed video's chunks, the grounding step's input): after a cold request and
    a cache hit neither stub has mapped libtorch, while the vision step's has. (DALI's frames, bfloat16 features and
    a GPU's are torch tensors: tests/python_backend/test_steps_served_precision.py.)"""
    log: dict[str, object] = {}
    for name in ("cold", "hit"):
        timed(server, clips[3], "a red circle", log, name)
    assert not isinstance(log["cold"], Exception) and not isinstance(log["hit"], Exception), log
    assert (log["cold"].cache_hit, log["hit"].cache_hit) == (False, True)
    np.testing.assert_allclose(log["hit"].result.logits, log["cold"].result.logits, rtol=0, atol=1e-6)  # same features
    maps = {m: Path(f"/proc/{pid}/maps").read_text() for m, pid in stub_pids(server).items()}
    assert "libtorch" not in maps[TOP] and "libtorch" not in maps[SLOW] and "libtorch" in maps["videoitg_vision"]


def test_a_cancelled_stream_of_direct_decode_calls_is_never_decoded(server: TritonServer,
                                                                    clips: list[bytes]) -> None:
    """Under the BLS model the decode step has no queue bound of its own: the top level sends it at most
    max_in_flight videos, and the public ports serve no step (tests/front/test_served.py). A stream of direct calls
    behind them, cancelled while its calls wait for the step, leaves none of them to decode: each ends at the step's
    check before its decode. Catches: without Triton's dynamic batcher, which dropped a cancelled request from its
    queue, each was decoded."""
    record = server.repository / SLOW / "1" / DECODED

    def decoded() -> int:
        return record.read_text().count("video") if record.exists() else 0

    said = f"{SLOW}: a request ended unanswered: it was cancelled"
    before, said_before = decoded(), server.log_tail(10_000_000).count(said)
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # behind the front, with the key only the front holds
    c.start_stream(callback=lambda result, error: None, headers=server.inference_headers("grpc"))
    for clip in clips[:3]:
        t = grpc.InferInput("VIDEO", [1, 1], "BYTES")
        t.set_data_from_numpy(np.array([[clip]], dtype=object))
        c.async_stream_infer(SLOW, [t])
    time.sleep(DELAY_S / 3)  # the first in the step's execute (DELAY_S), the others waiting for it
    c.stop_stream(cancel_requests=True)
    c.close()
    assert wait_until(lambda: server.log_tail(10_000_000).count(said) - said_before == 3, 3 * DELAY_S + 30), \
        server.log_tail(3000)
    assert decoded() == before
