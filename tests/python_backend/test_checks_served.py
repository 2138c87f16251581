"""Each step's own input checks (`videoitg.python_backend.checks`), called straight on tritonserver with the inference
key: wrong shapes, sizes and types are refused naming the input."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tritonclient.utils import InferenceServerException

from tests.support.compare import TOL
from tests.support.server import (
    CPU_LIMITS,
    grpc_infer,
    grpc_stream_infer,
    skip_without_tritonserver,
)

pytestmark = pytest.mark.server
LIMITS = CPU_LIMITS

skip_without_tritonserver()


def test_step_models_called_directly_check_their_inputs(server, scorer, sample) -> None:
    """A client can reach the step models too: each refuses what the top-level model would never send it, with
    INVALID_ARGUMENT naming the input, and a bad call never fails a good request batched with it."""
    path, data, instruction = sample
    cfg = scorer.config
    s, h = cfg.vision.image_size, cfg.text.hidden_size
    frames = LIMITS.max_sampled_frames + 1
    with pytest.raises(InferenceServerException, match=rf"PIXEL_VALUES holds {frames} frames; 1 to "
                                                       rf"{LIMITS.max_sampled_frames}") as ei:
        grpc_infer(server, {"PIXEL_VALUES": (np.zeros((1, frames, 3, s, s), np.uint8), "UINT8")}, "videoitg_vision")
    assert ei.value.status() == "StatusCode.INVALID_ARGUMENT"
    with pytest.raises(InferenceServerException, match=r"unexpected shape for input 'PIXEL_VALUES'"):  # tritonserver's
        grpc_infer(server, {"PIXEL_VALUES": (np.zeros((1, 2, 3, s + 1, s), np.uint8), "UINT8")}, "videoitg_vision")
    with pytest.raises(InferenceServerException, match=r"NUM_FRAMES is 1: the video of a 2-frame chunk"):
        grpc_infer(server, {"PIXEL_VALUES": (np.zeros((1, 2, 3, s, s), np.uint8), "UINT8"),
                            "NUM_FRAMES": (np.array([[1]], np.int64), "INT64")}, "videoitg_vision")
    (empty,) = grpc_stream_infer(server, {"VIDEO": (np.array([[b""]], object), "BYTES")}, "videoitg_decode")
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
    # The width is the checkpoint's: tritonserver refuses another itself
    # (tests/repository/test_generator_step_shapes.py).
    messages = {"tokens": "FEATURES of", "hidden": "unexpected shape for input 'FEATURES'", "nan": "NaN or infinite"}

    def call(job):
        name, inputs = job
        try:
            return name, grpc_infer(server, inputs, "videoitg_grounding")
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
