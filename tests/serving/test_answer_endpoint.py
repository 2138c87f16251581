"""Select, then answer, against a real video-LLM: a tiny random LLaVA behind `transformers serve`
(tests/support/vlm.py), with a recording byte relay in front of it, so each test reads what the video-LLM received
without standing in for it. The frames it gets are the ones `videoitg score --top-k K` picks in-process, as JPEGs,
chronological, each after its timestamp, then the question."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="transformers serve needs transformers[serving] (the dev extra)")
pytest.importorskip("aiohttp", reason="the serve extra")

from tests.support.recording import Received, RecordingRelay
from tests.support.video import write_clip
from tests.support.vlm import IMAGE_TOKENS, ServedVLM, build_tiny_vlm, serve_vlm
from videoitg.cli import main
from videoitg.export import top_k_images
from videoitg.handoff import frame_label
from videoitg.outputs import GroundingResult

ASK = "When is the picture brightest?"
K = 4
SIZE = 96  # the frames' longer side


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:  # 250 frames at 25 fps: 10 sampled frames at 1 fps
    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=250, gop=10, width=160, height=96)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedVLM]:
    d = tmp_path_factory.mktemp("vlm")
    with serve_vlm(build_tiny_vlm(d / "model"), d / "serve.log") as served:
        yield served


@pytest.fixture(scope="module")
def relay(vlm: ServedVLM) -> Iterator[RecordingRelay]:
    with RecordingRelay(f"127.0.0.1:{vlm.port}") as r:
        yield r


@pytest.fixture
def upstream(relay: RecordingRelay) -> str:
    """The video-LLM's base URL through the relay, its record cleared."""
    relay.clear()
    return f"http://127.0.0.1:{relay.port}/v1"


@pytest.fixture(scope="module")
def picked(scorer, clip: Path) -> tuple[GroundingResult, list[tuple[int, float, bytes]]]:
    """`videoitg score --top-k K` in-process: the result, and the top-K frames (number, timestamp, JPEG at SIZE)."""
    result = scorer.score(clip, ASK)
    images = top_k_images(clip, result, K, SIZE, jpeg=True)
    return result, [(result.frame_indices[p], result.timestamps[p], jpeg) for p, jpeg in images]


def chat_completions(received: list[Received]) -> list[dict[str, Any]]:
    return [r.json() for r in received if r.method == "POST" and r.path == "/v1/chat/completions"]


def assert_frames_sent(body: dict[str, Any], frames: list[tuple[int, float, bytes]], question: str) -> None:
    """The last user message: for each frame, chronologically, its timestamp text and its JPEG; then the question."""
    content = body["messages"][-1]["content"]
    images = [p for p in content if p["type"] == "image_url"]
    assert len(images) == len(frames)
    assert len(content) == 2 * len(frames) + 1
    for j, (n, t, jpeg) in enumerate(frames):
        assert content[2 * j] == {"type": "text", "text": frame_label(n, t)}
        url = content[2 * j + 1]["image_url"]["url"]
        assert url == "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    numbers = [int(re.match(r"Frame (\d+) at", p["text"])[1]) for p in content[:-1:2]]
    assert numbers == sorted(numbers)
    assert content[-1] == {"type": "text", "text": question}


def test_the_command_sends_the_in_process_picks_and_prints_the_answer(clip: Path, upstream: str, relay, picked,
                                                                      vlm: ServedVLM) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["answer", str(clip), "-q", ASK, "--upstream", upstream, "--top-k", str(K), "--frame-size",
                   str(SIZE), "--max-tokens", "3", "--json"])
    assert rc == 0
    answer = json.loads(out.getvalue())
    result, frames = picked
    assert answer["videoitg"]["frames"] == [n for n, _, _ in frames] == result.top_k_frames(K)
    assert answer["choices"][0]["message"]["role"] == "assistant"
    received = relay.received()
    assert [(r.method, r.path) for r in received] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    (body,) = chat_completions(received)
    assert body["model"] == vlm.model and body["max_tokens"] == 3 and "videoitg" not in body
    assert_frames_sent(body, frames, ASK)
    # The video-LLM counted K images: the same request without them is K * IMAGE_TOKENS shorter.
    assert answer["usage"]["prompt_tokens"] - prompt_tokens(vlm, without_images(body)) == K * IMAGE_TOKENS


def without_images(body: dict[str, Any]) -> dict[str, Any]:
    last = {**body["messages"][-1], "content": [p for p in body["messages"][-1]["content"] if p["type"] != "image_url"]}
    return {**body, "messages": [*body["messages"][:-1], last], "max_tokens": 1}


def prompt_tokens(vlm: ServedVLM, body: dict[str, Any]) -> int:
    """The video-LLM's own count of a request's prompt tokens (sent to it directly)."""
    from openai import OpenAI

    return OpenAI(base_url=vlm.base_url, api_key="-").chat.completions.create(**body).usage.prompt_tokens
