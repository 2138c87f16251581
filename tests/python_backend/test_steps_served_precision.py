"""`videoitg serve --precision fp8` on the real tritonserver (CPU: the FP8 layers emulated, videoitg/model/fp8.py):
the steps run the language model's middle decoder layers' linear layers in float8 and the rest in bfloat16, and a
served answer equals the in-process `Scorer(precision="fp8")` on the same video."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.server import CPU_SPEC, skip_without_tritonserver
from videoitg.client.kserve import VideoITGClient
from videoitg.defaults import default_checkpoint
from videoitg.pipeline.scorer import Scorer
from videoitg.synthetic.sample import sample_video

pytestmark = pytest.mark.server
skip_without_tritonserver()


@pytest.fixture(scope="module")
def server(shared_servers):
    yield from shared_servers.hold(dataclasses.replace(CPU_SPEC, precision="fp8", dtype=""))


def test_served_fp8_equals_in_process_fp8(server, scorer) -> None:
    """Same frames; logits within 1e-3 of in-process FP8 (the same emulated FP8 layers and bfloat16 steps; FP8
    quantizes each token on its own, so the chunks the steps see change nothing) and away from fp32 by FP8's own
    error."""
    path, question = sample_video()
    with VideoITGClient(server.grpc_url, "grpc") as client:
        params = client.model_parameters()
        served = client.infer(path.read_bytes(), question).result
    assert params["precision"] == "fp8" and params["dtype"] == "bfloat16"
    fp8 = Scorer(default_checkpoint(), precision="fp8", sampling=scorer.sampling).score(path, question)
    fp32 = scorer.score(path, question)
    assert served.frame_indices == fp8.frame_indices == fp32.frame_indices
    got, want, full = (np.asarray(r.logits) for r in (served, fp8, fp32))
    assert np.abs(got - want).max() <= 1e-3
    assert np.abs(got - full).max() > 1e-3  # the FP8 layers ran (fp32 would agree within 1e-5)
