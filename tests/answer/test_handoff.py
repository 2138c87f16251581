"""The chat request for a video-LLM: its shape is what the openai SDK's own request types accept, the SDK sends it
as is to an OpenAI-compatible endpoint, and its images are the result's top-K frames."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import require
from tests.support.video import read_number, write_clip
from videoitg.answer.handoff import chat_request
from videoitg.decode import decode_full_frames
from videoitg.outputs import GroundingResult
from videoitg.pipeline.scorer import Scorer
from videoitg.request.options import RequestOptions

require(("openai",), "the openai SDK (the dev extra) is not installed")  # imported by the tests that use it

MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"


def sdk_accepts(request: dict) -> bool:
    """Whether the openai SDK's CompletionCreateParamsNonStreaming takes `request` whole: pydantic validates it
    against the TypedDicts (a missing key, a wrong type or literal raises) and drops keys they do not name, so the
    validated copy equals the request only when every key is one of the SDK's."""
    from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming
    from pydantic import TypeAdapter

    def materialize(x):  # Iterable fields validate lazily: iterate them
        if isinstance(x, dict):
            return {k: materialize(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)) or type(x).__name__ == "ValidatorIterator":
            return [materialize(v) for v in x]
        return x

    adapter = TypeAdapter(CompletionCreateParamsNonStreaming)  # alive while the lazy fields are iterated
    return materialize(adapter.validate_python(request)) == request


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("clip") / "numbered.mp4", frames=250, gop=10, width=160, height=96)


@pytest.fixture(scope="module")
def result(clip: Path) -> GroundingResult:
    return Scorer.default().score(clip, "When is the picture brightest?")


def _image(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    assert head == "data:image/jpeg;base64"
    with Image.open(io.BytesIO(base64.b64decode(data))) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def test_the_request_has_the_sdk_shape_and_the_top_k_frames(clip: Path, result: GroundingResult) -> None:
    request = chat_request(clip, result, MODEL, options=RequestOptions(top_k=4))
    assert sdk_accepts(request)
    assert request["model"] == MODEL
    (message,) = request["messages"]
    parts = message["content"]
    assert message["role"] == "user" and len(parts) == 2 * 4 + 1
    assert parts[-1] == {"type": "text", "text": "When is the picture brightest?"}
    top = result.top_k_positions(4)
    reference = decode_full_frames(clip, [result.frame_indices[i] for i in top])
    for j, pos in enumerate(top):
        label, image = parts[2 * j], parts[2 * j + 1]
        n = result.frame_indices[pos]
        assert label == {"type": "text", "text": f"Frame {n} at {result.timestamps[pos]:.1f} s:"}
        got = _image(image["image_url"]["url"])
        assert got.shape == reference[j].shape == (96, 160, 3)
        assert np.abs(got.astype(int) - reference[j].astype(int)).mean() < 0.5
        assert read_number(got) == n


def test_size_and_question(clip: Path, result: GroundingResult) -> None:
    request = chat_request(clip, result, MODEL, options=RequestOptions(top_k=2, frames="jpeg", frame_size=80),
                           question="What changes?")
    assert sdk_accepts(request)
    parts = request["messages"][0]["content"]
    assert parts[-1]["text"] == "What changes?"
    assert _image(parts[1]["image_url"]["url"]).shape == (48, 80, 3)


def test_a_request_the_sdk_would_not_take_is_told_apart() -> None:
    from pydantic import ValidationError

    assert sdk_accepts({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]})
    with pytest.raises(ValidationError):  # a misspelled required key
        sdk_accepts({"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "txt": "q"}]}]})
    with pytest.raises(ValidationError):  # a wrong literal
        sdk_accepts({"model": "m", "messages": [{"role": "user", "content": [{"type": "image", "image_url": {
            "url": "data:,"}}]}]})
    assert not sdk_accepts({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "q", "colour": "red"}]}]})  # a key the SDK does not name


def test_the_sdk_sends_it_to_an_openai_compatible_endpoint(clip: Path, result: GroundingResult) -> None:
    """The real SDK client posts the request to a local endpoint speaking the chat-completions protocol (what
    vLLM, SGLang and trtllm-serve answer on /v1/chat/completions): the body it sends is the request."""
    from openai import OpenAI

    received: list[dict] = []

    class Endpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received.append({"path": self.path, "body": body})
            reply = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "At 4 s."}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        request = chat_request(clip, result, MODEL, options=RequestOptions(top_k=3))
        client = OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="EMPTY", max_retries=0)
        answer = client.chat.completions.create(**request)
    finally:
        server.shutdown()
        server.server_close()
    assert answer.choices[0].message.content == "At 4 s."
    (got,) = received
    assert got["path"] == "/v1/chat/completions"
    assert got["body"] == json.loads(json.dumps(request))
