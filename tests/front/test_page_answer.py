"""The page of a server with a video-LLM behind it (`videoitg serve --answer-upstream URL --media-root DIR`), in a
real headless Chromium: the answer button streams the video-LLM's answer beside the frames it was given (the real
OpenAI-compatible stand-in, `transformers serve` of a tiny random VLM, behind a recording relay, so the test reads
what the video-LLM received), an answer request the API refuses shows its own message, and a video named on the
server is scored by reference, the page saying it cannot play it. Without a browser the module skips saying why
(in CI it fails)."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import require

pytest.importorskip("aiohttp", reason="the serve extra")

from tests.support.browser import CSS, ID, chromium, open_page, page_state, require_browser, shown
from tests.support.recording import RecordingRelay
from tests.support.server import served, skip_without_tritonserver, wait_until
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.repository.generator import RepoSpec

require(("fastapi",), "transformers serve needs transformers[serving] (the dev extra)")
require_browser()
skip_without_tritonserver()
pytestmark = pytest.mark.server  # its own tritonserver, beside the session's video-LLM

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

K = 3
MAX_TOKENS = 8
LABEL = re.compile(r"Frame (\d+) at ([0-9.]+) s:")  # the text part before each frame (videoitg.answer.handoff)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, sample: tuple[Path, bytes, str]) -> Path:
    """The server's media root, holding the sample video."""
    root = tmp_path_factory.mktemp("media")
    shutil.copy(sample[0], root / "sample.mp4")
    return root.resolve()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, relay: RecordingRelay, media: Path) -> Iterator[TritonServer]:
    """`videoitg serve --media-root MEDIA --answer-upstream RELAY` of the embedded checkpoint, its page on."""
    options = ServerOptions(answer_upstream=f"http://127.0.0.1:{relay.port}/v1")
    yield from served(RepoSpec(target="cpu", media_roots=(str(media),)), tmp_path_factory, options)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def wait_done(browser: WebDriver) -> tuple[str, str, str]:
    """(state, status line, error text) once the request ended."""
    assert wait_until(lambda: shown(browser, "return document.body.dataset.state") != "busy", 120)
    return page_state(browser)


def chat_requests(relay: RecordingRelay) -> list[dict[str, Any]]:
    return [r.json() for r in relay.received() if r.path == "/v1/chat/completions"]


def test_the_answer_streams_beside_the_frames_the_video_llm_was_given(browser: WebDriver, server: TritonServer,
                                                                       relay: RecordingRelay,
                                                                       sample: tuple[Path, bytes, str]) -> None:
    path, _, instruction = sample
    open_page(browser, server)
    assert wait_until(lambda: browser.find_element(ID, "answer-model").get_attribute("value") != "", 10)
    browser.find_element(ID, "video-file").send_keys(str(path))
    browser.find_element(ID, "instruction").send_keys(instruction)
    browser.find_element(CSS, "#options-box summary").click()
    browser.find_element(ID, "option-top_k").send_keys(str(K))
    browser.find_element(ID, "score").click()
    assert wait_done(browser)[0] == "done"
    scored = shown(browser, "return [...document.querySelectorAll('#thumbs .thumb')].map(b => Number(b.dataset.frame))")
    relay.clear()
    max_tokens = browser.find_element(ID, "max-tokens")
    max_tokens.clear()
    max_tokens.send_keys(str(MAX_TOKENS))
    during = shown(browser, "document.getElementById('ask-llm').click(); return document.body.dataset.state")
    assert during == "busy"
    shows, line, error = wait_done(browser)
    assert shows == "done" and line.startswith("Answered in"), (line, error)

    (body,) = chat_requests(relay)  # what the video-LLM received: a stream, K frames, each after its label
    assert body["stream"] is True and body["max_tokens"] == MAX_TOKENS and "videoitg" not in body
    content = body["messages"][-1]["content"]
    labels = [LABEL.fullmatch(p["text"].strip()) for p in content if p["type"] == "text" and LABEL.match(p["text"])]
    assert [p["type"] for p in content].count("image_url") == K == len(labels)
    given = shown(browser, "return [...document.querySelectorAll('#answer-frames .thumb')].map(b => "
                           "[Number(b.dataset.frame), Number(b.dataset.seek), !!b.querySelector('img')])")
    assert [g[0] for g in given] == [int(m[1]) for m in labels] == scored  # the page's top_k went along
    for (_, at, has_image), m in zip(given, labels, strict=True):
        assert abs(at - float(m[2])) <= 0.05 and has_image  # the label's 1-decimal time; the scored thumbnail
    assert shown(browser, "return document.getElementById('answer-asked').textContent") == instruction
    pieces = shown(browser, "return document.getElementById('answer-text').childNodes.length")
    assert pieces > 1, pieces  # shown piece by piece, as the events arrived


def test_a_refused_answer_shows_the_apis_message(browser: WebDriver, server: TritonServer, relay: RecordingRelay,
                                                 tmp_path: Path, sample: tuple[Path, bytes, str]) -> None:
    outside = tmp_path / "outside.mp4"  # not under the media root
    shutil.copy(sample[0], outside)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": f"file://{outside}"}}, {"type": "text", "text": "q"}]}]}
    request = urllib.request.Request(f"http://{server.http_url}/v1/chat/completions", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=30)
    status, message = e.value.code, json.loads(e.value.read())["error"]["message"]
    open_page(browser, server)
    browser.find_element(ID, "source-server").click()
    browser.find_element(ID, "video-path").send_keys(str(outside))
    browser.find_element(ID, "instruction").send_keys("q")
    relay.clear()
    browser.find_element(ID, "ask-llm").click()
    shows, line, error = wait_done(browser)
    assert shows == "error" and line.startswith(f"Refused (HTTP {status})") and error == message, (line, error)
    assert chat_requests(relay) == []  # it never reached the video-LLM


def test_a_video_named_on_the_server_is_scored_by_reference(browser: WebDriver, server: TritonServer, media: Path,
                                                            sample: tuple[Path, bytes, str]) -> None:
    open_page(browser, server)
    assert str(media) in browser.find_element(ID, "roots").text  # the page names the media roots it may use
    browser.find_element(ID, "video-path").send_keys(str(media / "sample.mp4"))
    browser.find_element(ID, "instruction").send_keys(sample[2])
    browser.find_element(ID, "score").click()
    shows, line, error = wait_done(browser)
    assert shows == "done", (line, error)
    assert len(browser.find_elements(CSS, "#curve circle.point")) == 24
    assert "cannot be played here" in browser.find_element(ID, "player-note").text  # said plainly
    assert "by reference" in browser.find_element(ID, "timing").text
