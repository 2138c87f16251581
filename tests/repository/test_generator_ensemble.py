"""The `ensemble` repository (decode -> vision -> grounding -> select as a Triton ensemble) on the real
tritonserver (CPU): the same inputs, outputs and numbers as in-process scoring and as the BLS repository."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

import tritonclient.grpc as grpc
from tritonclient.utils import InferenceServerException

from benchmarks.clips import random_clip
from tests.support.compare import assert_moments_close, assert_results_close
from tests.support.server import skip_without_tritonserver
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.errors import InputError
from videoitg.repository.generator import RepoSpec
from videoitg.request.options import RequestOptions

pytestmark = pytest.mark.server

skip_without_tritonserver()


@pytest.fixture(scope="module")
def server(shared_servers):
    yield from shared_servers.hold(RepoSpec(target="cpu", mode="ensemble"))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_ensemble_answers_like_in_process(protocol, server, scorer, tmp_path) -> None:
    data = random_clip(tmp_path / "clip.mp4", seed=3)
    url = server.grpc_url if protocol == "grpc" else server.http_url
    with VideoITGClient(url, protocol, digest_first_bytes=0) as c:
        assert not c.accepts_digest()  # no cache, no VIDEO_DIGEST: the client sends the bytes
        for rule in ("released", "exact"):
            out = c.infer(data, "when is the red circle visible?", RequestOptions(top_k=3, ranking_rule=rule))
            ref = scorer.score(data, "when is the red circle visible?")
            ref.ranking_rule = rule
            assert_results_close(out.result, ref)
            assert out.result.ranking_rule == rule
            assert out.top_k_frames == out.result.top_k_frames(3)
            assert_moments_close(out.moments, ref)
            assert out.cache_hit is False and out.sent_video  # no cache: the video is decoded every time


def test_ensemble_reports_bad_input_from_the_step_that_checks_it(server, tmp_path) -> None:
    data = random_clip(tmp_path / "clip.mp4", seed=4)
    with VideoITGClient(server.grpc_url, "grpc") as c:
        with pytest.raises(RemoteError, match="NotAVideoError"):
            c.infer(b"\x00garbage" * 64, "when?")
        with pytest.raises(RemoteError, match="instruction is empty"):
            c.infer(data, "\u200b ")
        assert c.infer(data, "when?").result.logits  # the server keeps serving


def test_select_step_called_directly_checks_its_inputs(server) -> None:
    c = grpc.InferenceServerClient(server.internal_grpc_url)  # behind the front: clients cannot reach it

    def call(logits: np.ndarray, frames: np.ndarray, times: np.ndarray):
        ins = []
        for name, arr, dtype in (("LOGITS", logits, "FP32"), ("FRAME_INDICES", frames, "INT64"),
                                 ("TIMESTAMPS", times, "FP64")):
            t = grpc.InferInput(name, list(arr.shape), dtype)
            t.set_data_from_numpy(arr)
            ins.append(t)
        return c.infer("videoitg_select", ins, headers=server.inference_headers("grpc"))

    try:
        ok = call(np.array([[0.1, 2.0, -1.0]], np.float32), np.array([[0, 10, 20]]), np.array([[0.0, 1.0, 2.0]]))
        assert ok.as_numpy("RANKING")[0].tolist() == [1, 0, 2]
        with pytest.raises(InferenceServerException, match="one value per frame"):
            call(np.zeros((1, 3), np.float32), np.array([[0, 10]]), np.zeros((1, 3)))
        with pytest.raises(InferenceServerException, match="rising order"):
            call(np.zeros((1, 3), np.float32), np.array([[0, 20, 10]]), np.zeros((1, 3)))
        with pytest.raises(InferenceServerException, match="finite"):
            call(np.array([[np.nan, 0, 0]], np.float32), np.array([[0, 1, 2]]), np.zeros((1, 3)))
    finally:
        c.close()


def test_ensemble_serves_no_frames_and_the_client_says_so(server, tmp_path) -> None:
    video = tmp_path / "v.mp4"
    random_clip(video, seed=5)
    with VideoITGClient(server.grpc_url) as c:
        with pytest.raises(InputError, match="does not serve frames .*ensemble"):
            c.infer(video, "when?", RequestOptions(frames="jpeg"))
        assert c.infer(video, "when?").frames is None  # not asked: answered as always
