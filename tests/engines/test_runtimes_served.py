"""The built engines answer served requests: the session's tiny engines (conftest's `tiny_engines`: the fp32 ONNX
graphs of a random tiny checkpoint), then the real tritonserver serving a repository generated with that checkpoint
and those engines. Its scores equal the in-process torch scores over HTTP and gRPC, and /metrics says which runtime
answered each step.

Tolerance: 1e-4 on the logits, the fp32 ONNX target of `videoitg verify`; the scores (the sigmoid, what is ranked and
served) within 1e-5. On the sample this checkpoint's logits (|logit| up to 2.2) come within 4.8e-7 of torch and its
scores within 4.3e-8. The embedded trained checkpoint's (|logit| up to 9.3) come within 8.2e-5: its SigLIP graph's
features differ from torch's by up to 8e-5 (1.7e-5 relative, with every ONNX Runtime graph optimisation off as well:
fp32 summation order); the GPU check's `engines` section serves that checkpoint's graphs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.compare import assert_results_close
from tests.support.server import metric_value, skip_without_tritonserver
from videoitg.client.kserve import VideoITGClient
from videoitg.pipeline.scorer import Scorer
from videoitg.repository.generator import RepoSpec
from videoitg.synthetic.sample import sample_video

pytestmark = pytest.mark.server
TOL = 1e-4  # logits
SCORE_TOL = 1e-5

skip_without_tritonserver()


@pytest.fixture(scope="module")
def server(tiny_engines, shared_servers):
    checkpoint, engines, _ = tiny_engines
    yield from shared_servers.hold(RepoSpec(target="cpu", checkpoint=str(checkpoint), engines=str(engines)))


def test_onnx_engines_answer_served_requests_like_in_process(server, tiny_engines) -> None:
    path, instruction = sample_video()
    ref = Scorer(tiny_engines[0]).score(path, instruction)
    for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
        with VideoITGClient(url, protocol) as client:
            got = client.score(path, instruction)
        assert_results_close(got, ref, tol=TOL)  # logits, frames, timestamps, the ranking up to near-ties
        score_diff = float(np.abs(np.asarray(got.scores) - np.asarray(ref.scores)).max())
        assert score_diff <= SCORE_TOL, f"{protocol}: ONNX-served scores differ from in-process torch by {score_diff}"
    metrics = server.metrics()
    for step in ("videoitg_vision", "videoitg_grounding"):
        assert metric_value(metrics, "videoitg_step_runtime", model=step, runtime="onnxruntime") == 1, step
        assert metric_value(metrics, "videoitg_step_runtime", model=step, runtime="torch") == 0, step
