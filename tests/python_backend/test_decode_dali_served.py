"""The `--decoder dali` repository on the real tritonserver (CPU): the python decode step runs DALI's CPU decoder
through its Python API and the decode pool, streaming uint8 chunks to the vision step (the same step decodes on NVDEC
on a GPU instance; not run on a GPU). A VP9 video is answered with the frames, timestamps and
scores of the PyAV-decoded video within a stated tolerance; a codec DALI's CPU decoder lacks is refused with the
decoder's typed error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support import require

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.server import grpc_stream_infer, skip_without_tritonserver
from tests.support.video import write_clip
from videoitg.client.kserve import RemoteError, VideoITGClient
from videoitg.decode import decode_video, probe_video
from videoitg.repository.generator import RepoSpec
from videoitg.request.options import RequestOptions

require(("nvidia.dali",), "DALI (nvidia-dali) is not installed")

pytestmark = pytest.mark.server

skip_without_tritonserver()

# DALI's CPU frames against PyAV's, mean |difference| of the uint8 frames in 0..255 units: the "camera" mean bound
# of `dali.PIXEL_BOUNDS` (tests/decode/test_dali.py holds the per-content bounds).
PIXEL_MEAN_BOUND = 0.25
# Logits of the DALI-decoded video against the PyAV-decoded one on the embedded checkpoint (measured on this clip,
# in process, 2026-11-23, CPU: 6.4e-4 at most over a 1.8 logit range; pixels 0.0004 mean, 1.0 max apart).
LOGIT_TOL = 0.01


@pytest.fixture(scope="module")
def server(shared_servers):
    yield from shared_servers.hold(RepoSpec(target="cpu", decoder="dali", stream_frames=3))


@pytest.fixture(scope="module")
def vp9(tmp_path_factory) -> bytes:
    path = write_clip(tmp_path_factory.mktemp("clip") / "clip.webm", codec="libvpx-vp9", frames=200, width=96,
                      height=64, gop=12)  # 8 s: 8 frames at the served 1 fps, three chunks of 3
    return Path(path).read_bytes()


def test_vp9_is_answered_like_the_pyav_decode(server, scorer, vp9: bytes) -> None:
    with VideoITGClient(server.grpc_url, "grpc", digest_first_bytes=0) as c:
        out = c.infer(vp9, "when is the red circle visible?", RequestOptions(top_k=3))
    want = scorer.score(vp9, "when is the red circle visible?")  # PyAV
    got = out.result
    assert got.frame_indices == want.frame_indices
    assert np.allclose(got.timestamps, want.timestamps, rtol=0, atol=1e-9)  # two decoders' timestamps
    diff = float(np.abs(np.asarray(got.logits) - np.asarray(want.logits)).max())
    assert diff <= LOGIT_TOL, f"logits differ from PyAV's by {diff} (tolerance {LOGIT_TOL})"


def test_decode_step_streams_dali_frames_equal_to_pyav_within_the_bound(server, vp9: bytes) -> None:
    """The bls repository's dali decode step streams (decoupled): uint8 chunks of `stream_frames` with the video's
    frame count, then the frame numbers, times and duration; the chunks are PyAV's frames within DALI's bound."""
    answers = grpc_stream_infer(server, {"VIDEO": (np.array([[vp9]], dtype=object), "BYTES")}, "videoitg_decode")
    assert not any(isinstance(a, Exception) for a in answers), answers
    chunks, last = answers[:-1], answers[-1]
    pixels = np.concatenate([c.as_numpy("PIXEL_VALUES")[0] for c in chunks])
    want = decode_video(vp9, image_size=pixels.shape[-1], decoder="pyav", output="uint8")
    assert len(chunks) > 1 and all(c.as_numpy("PIXEL_VALUES").dtype == np.uint8 for c in chunks)
    assert all(int(c.as_numpy("NUM_FRAMES")[0, 0]) == len(want) for c in chunks)
    assert pixels.shape == tuple(want.pixel_values.shape)
    assert last.as_numpy("FRAME_INDICES")[0].tolist() == want.frame_indices
    assert np.allclose(last.as_numpy("TIMESTAMPS")[0], want.timestamps, atol=1e-9)
    assert float(last.as_numpy("DURATION").reshape(-1)[0]) == pytest.approx(probe_video(vp9).duration_s, abs=1e-6)
    mean = float(np.abs(pixels.astype(float) - want.pixel_values.numpy()).mean())
    assert mean <= PIXEL_MEAN_BOUND, f"DALI's frames differ from PyAV's by {mean:.3f} on average"


def test_a_codec_dali_cpu_cannot_decode_is_refused_with_the_typed_error(server, tmp_path) -> None:
    h264 = write_clip(tmp_path / "clip.mp4", codec="libx264", frames=10).read_bytes()
    with VideoITGClient(server.grpc_url, "grpc", digest_first_bytes=0) as c:
        with pytest.raises(RemoteError, match="UnsupportedCodecError.*cannot decode h264"):
            c.infer(h264, "when?")
