"""The top-K frames from a real tritonserver (FRAMES, FRAME_SIZE): the decoder's frames at those numbers (uint8
exactly, JPEG close), at the video's size and at a requested one; absent and the answer unchanged when not asked;
bad values and digest-only requests refused naming the input; `score --server --export-frames` writes what the
in-process path writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the serve extra (tritonclient) is not installed")

from tests.support.compare import TOL, key_tolerance, ranking_keys
from tests.support.server import raw_inputs
from tests.support.video import read_number, write_clip
from videoitg.client.kserve import VideoITGClient
from videoitg.commands.cli import main
from videoitg.contract.protocol import RESULT_NAMES as OUTPUTS
from videoitg.decode import decode_full_frames
from videoitg.decode.export import resize_longer_side
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.request.options import RequestOptions

ASK = "When is the picture brightest?"
INVALID = ("StatusCode.INVALID_ARGUMENT", "400")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:  # 250 frames at 25 fps, 160 x 96: 10 sampled frames at 1 fps
    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=250, gop=10, width=160, height=96)


@pytest.fixture(scope="module")
def client(cpu_server):
    with VideoITGClient(cpu_server.grpc_url) as c:
        yield c


@pytest.mark.parametrize("size", [None, 80])
def test_served_frames_are_the_decoders_frames(client, clip, size) -> None:
    pixels = client.infer(clip, ASK, RequestOptions(top_k=4, frames="uint8", frame_size=size))
    top = pixels.top_k_frames
    assert len(top) == 4 and top == sorted(top)  # chronological, TOP_K_FRAMES' order
    reference = [resize_longer_side(im, size) for im in decode_full_frames(clip, top)]
    assert len(pixels.frames) == 4
    for got, ref, n in zip(pixels.frames, reference, top, strict=True):
        assert got.dtype == np.uint8 and np.array_equal(got, ref)  # exactly
        assert got.shape == ((96, 160, 3) if size is None else (48, 80, 3))
        assert read_number(got) == n
    result, images = client.score(clip, ASK, RequestOptions(top_k=4, frames="jpeg", frame_size=size))
    assert result.top_k_frames(4) == top
    for got, ref in zip(images, reference, strict=True):
        assert got.shape == ref.shape and np.abs(got.astype(int) - ref.astype(int)).mean() < 0.5


def test_frames_are_absent_unless_asked_and_the_answer_is_unchanged(client, clip) -> None:
    plain = client.infer(clip, ASK, RequestOptions(top_k=4))
    asked = client.infer(clip, ASK, RequestOptions(top_k=4, frames="jpeg"))
    assert plain.frames is None and asked.frames is not None
    assert set(plain.outputs) == set(OUTPUTS)
    # Exactly: one server grounds the same cached features twice, each request alone.
    for name in OUTPUTS:
        if name != "CACHE_HIT":
            assert np.array_equal(plain.outputs[name], asked.outputs[name]), name
    # Asked for by name without FRAMES: nothing comes back under it.
    m = client._m
    r = client._client.infer(client.model, client.inputs(clip.read_bytes(), ASK, RequestOptions(top_k=4)),
                             outputs=[m.InferRequestedOutput(n) for n in (*OUTPUTS, "FRAME_JPEGS", "FRAME_PIXELS")])
    assert r.as_numpy("FRAME_JPEGS") is None and r.as_numpy("FRAME_PIXELS") is None
    assert r.as_numpy("TOP_K_FRAMES").reshape(-1).tolist() == plain.top_k_frames


def _refused(client, inputs) -> str:
    m = client._m
    with pytest.raises(Exception) as e:
        client._client.infer(client.model, inputs, outputs=[m.InferRequestedOutput("TOP_K_FRAMES")])
    assert e.value.status() in INVALID, e.value.status()
    return e.value.message()


@pytest.mark.parametrize(("frames", "size", "match"), [
    ("png", None, 'InputError: FRAMES must be one of jpeg, uint8, got "png"'),
    ("jpeg", 5000, "InputError: FRAME_SIZE must be an integer from 0 .* got 5000"),
    ("uint8", -3, "InputError: FRAME_SIZE must be an integer from 0 .* got -3"),
])
def test_bad_frames_values_are_refused_naming_the_input(client, clip, frames, size, match) -> None:
    named = {"FRAMES": frames.encode(), **({"FRAME_SIZE": size} if size is not None else {})}
    message = _refused(client, client.inputs(clip.read_bytes(), ASK) + raw_inputs(client._m, named))
    assert re.search(match, message), message


def test_a_digest_alone_cannot_get_frames(client, clip) -> None:
    data = clip.read_bytes()
    client.infer(data, ASK)  # the server now has the video's features
    message = _refused(client, client.inputs(None, ASK, RequestOptions(frames="jpeg"), digest=video_digest(data)))
    assert "FRAMES: the frames are decoded from the request's video: send VIDEO" in message
    # The client sends the bytes whenever it asks for frames, however large the video.
    with VideoITGClient(client.url, digest_first_bytes=1) as c:
        served_ = c.infer(data, ASK, RequestOptions(frames="jpeg"))
    assert served_.sent_video and served_.cache_hit and len(served_.frames) == len(served_.top_k_frames)


def test_an_unknown_format_is_refused_before_sending(client, clip) -> None:
    with pytest.raises(InputError, match="frames must be one of jpeg, uint8"):
        client.infer(clip, ASK, RequestOptions(frames="png"))


@pytest.mark.parametrize("size", [None, 80])
def test_score_server_export_frames_writes_what_in_process_writes(cpu_server, scorer, clip, tmp_path, size) -> None:
    extra = ["--frame-size", str(size)] if size else []
    argv = ["score", str(clip), "-i", ASK, "--top-k", "4"] + extra
    assert main(argv + ["--export-frames", str(tmp_path / "local")]) == 0
    assert main(argv + ["--export-frames", str(tmp_path / "served"), "--server", cpu_server.grpc_url]) == 0
    local = json.loads((tmp_path / "local" / "index.json").read_text())
    remote = json.loads((tmp_path / "served" / "index.json").read_text())
    # The clip's frames rank further apart than two computations of a score can move them, so the served top-K
    # frames and ranks are the in-process ones; the scores agree within the tolerance and their rounding.
    logits = scorer.score(clip, ASK).logits
    assert np.diff(np.sort(ranking_keys(logits, "released"))).min() > 2 * key_tolerance(logits, "released", TOL).max()
    assert {**remote, "frames": None} == {**local, "frames": None}
    assert [{**f, "score": None} for f in remote["frames"]] == [{**f, "score": None} for f in local["frames"]]
    assert np.allclose([f["score"] for f in remote["frames"]], [f["score"] for f in local["frames"]], rtol=0,
                       atol=1e-6 + TOL)
    for f in local["frames"]:  # the same decoder's frames through the same JPEG encoder: equal bytes
        assert (tmp_path / "served" / f["file"]).read_bytes() == (tmp_path / "local" / f["file"]).read_bytes()
