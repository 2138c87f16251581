"""`videoitg.client.kserve.http_request_body` without a server: the KServe v2 HTTP request the answer endpoint sends
tritonserver, a video by its bytes (one of the body's pieces, never copied) or by reference."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("tritonclient.http", reason="the serve extra (tritonclient) is not installed")

import tritonclient.http as httpclient

from videoitg.client.kserve import http_request_body, output_names, request_inputs
from videoitg.contract.protocol import VIDEO_URI
from videoitg.request.options import RequestOptions


def test_a_videos_request_body_is_tritonclients_with_the_video_as_one_piece_not_copied() -> None:
    video, question = bytearray(os.urandom(1 << 20)), "when does the dog jump? 犬"
    options = RequestOptions(top_k=8, frames="jpeg", frame_size=448)
    pieces, headers = http_request_body(video, question, options)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in output_names(options)]
    want, json_size = httpclient.InferenceServerClient.generate_request_body(
        request_inputs(httpclient, bytes(video), question, options), outputs)
    body, n = b"".join(pieces), int(headers["Inference-Header-Content-Length"])
    assert json.loads(body[:n]) == json.loads(want[:json_size])  # the request tritonclient builds
    assert body[n:] == want[json_size:]  # its binary data byte for byte, the video first
    assert any(p is video for p in pieces)  # the video itself, not a copy


def test_a_video_by_reference_is_named_by_its_path() -> None:
    pieces, headers = http_request_body(None, "q", RequestOptions(frames="jpeg"), uri="/media/long.mp4")
    body = b"".join(pieces)
    header = json.loads(body[:int(headers["Inference-Header-Content-Length"])])
    assert [i["name"] for i in header["inputs"]][0] == VIDEO_URI and b"/media/long.mp4" in body
    assert len(body) < 2048
