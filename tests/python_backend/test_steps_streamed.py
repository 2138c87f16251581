"""The streaming decode step (`videoitg.python_backend.steps`, pyav under the BLS model): STREAM_FRAMES frames an
answer, and the vision step's features of the chunks equal those of the whole video."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.compare import TOL
from tests.support.server import (
    CPU_STREAM_FRAMES,
    grpc_infer,
    grpc_stream_infer,
    skip_without_tritonserver,
)
from videoitg.decode import decode_video

pytestmark = pytest.mark.server
STREAM_FRAMES = CPU_STREAM_FRAMES

skip_without_tritonserver()


def test_decode_step_streams_chunks_that_the_vision_step_encodes_as_the_whole_video(server, scorer, sample) -> None:
    """The streaming decode step answers STREAM_FRAMES frames at a time with the video's frame count, the frame
    numbers last; its chunks are the whole decode's frames, and the vision step's features of the chunks (each
    with NUM_FRAMES) are the whole video's."""
    path, data, _ = sample
    answers = grpc_stream_infer(server, {"VIDEO": (np.array([[data]], object), "BYTES")}, "videoitg_decode")
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

    feats = [grpc_infer(server, {"PIXEL_VALUES": (c.as_numpy("PIXEL_VALUES"), "UINT8"),
                                 "NUM_FRAMES": (c.as_numpy("NUM_FRAMES"), "INT64")}, "videoitg_vision")
             .as_numpy("FEATURES")[0] for c in chunks]
    whole = scorer.stream_features(data).visual.numpy()
    assert np.abs(np.concatenate(feats) - whole).max() <= TOL
