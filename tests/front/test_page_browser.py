"""The page in a real browser: headless Chromium (tests/support/browser.py) on the session's real server (the CPU
repository of the embedded checkpoint, whose front serves the page on loopback by default). A person's steps: choose
the sample video, type the instruction, set top_k, press Score; the page must show the API's own numbers for the
same request (one curve point per sampled frame, the picked frames as the server's JPEGs, the moments), seek the
player where a moment or a frame is clicked, show a hostile instruction as text, and show a refused request's own
message. Without a browser the module skips saying why (in CI it fails)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="the serve extra")
pytest.importorskip("tritonclient.http", reason="the serve extra")

from tests.support.browser import CSS, ID, chromium, open_page, page_state, require_browser, shown
from tests.support.server import wait_until
from videoitg.client.kserve import VideoITGClient, http_request_body
from videoitg.contract.protocol import FRAME_INDICES, MOMENTS, SCORES, TIMESTAMPS, TOP, TOP_K_FRAMES
from videoitg.front.webpage import CSP, THUMBNAIL_SIZE
from videoitg.request.options import RequestOptions

require_browser()

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

    from videoitg.launch.server import TritonServer

K = 4  # frames to pick: fewer than the sample's 24 sampled frames, so the picked ones stand apart
HOSTILE = "<img src=x onerror=window.__pwned=1>"
PAGE_FRAMES = RequestOptions(frames="jpeg", frame_size=THUMBNAIL_SIZE)  # what the page asks for beside the options


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def press_score(browser: WebDriver, video: Path, instruction: str, top_k: int | None = None) -> list[str]:
    """Choose `video`, type `instruction` (and `top_k`), press Score and wait for the answer: the page's state and
    status line just after the press."""
    browser.find_element(ID, "video-file").send_keys(str(video))
    browser.find_element(ID, "instruction").send_keys(instruction)
    if top_k is not None:
        browser.find_element(CSS, "#options-box summary").click()
        browser.find_element(ID, "option-top_k").send_keys(str(top_k))
    during = browser.execute_script("document.getElementById('score').click(); return [document.body.dataset.state,"
                                    " document.getElementById('status').textContent]")
    assert wait_until(lambda d=browser: d.execute_script("return document.body.dataset.state") != "busy", 90)
    return during


def api_error(server: TritonServer, video: bytes, instruction: str) -> tuple[int, str]:
    """The API's own answer to the page's request of `video` and `instruction`, refused: (status, message)."""
    pieces, headers = http_request_body(video, instruction, PAGE_FRAMES)
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/{TOP}/infer", data=b"".join(pieces),
                                     headers=headers)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=60)
    return e.value.code, json.loads(e.value.read())["error"]


def test_the_page_shows_the_apis_numbers_for_a_scored_video(browser: WebDriver, server: TritonServer,
                                                             sample: tuple[Path, bytes, str]) -> None:
    path, _, instruction = sample
    with urllib.request.urlopen(f"http://{server.http_url}/", timeout=10) as r:  # the launched front serves it
        assert r.headers["Content-Security-Policy"] == CSP and r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Access-Control-Allow-Origin"] is None
    open_page(browser, server)
    during = press_score(browser, path, instruction, top_k=K)
    assert during[0] == "busy" and during[1].startswith("Scoring"), during  # the page says it runs
    assert page_state(browser)[0] == "done", page_state(browser)
    with VideoITGClient(server.http_url, "http") as client:
        api = client.infer(path, instruction, RequestOptions(top_k=K, frames="jpeg", frame_size=THUMBNAIL_SIZE))
    scores, times = api.outputs[SCORES].reshape(-1), api.outputs[TIMESTAMPS].reshape(-1)
    frames, picked = api.outputs[FRAME_INDICES].reshape(-1).tolist(), api.outputs[TOP_K_FRAMES].reshape(-1).tolist()
    moments = api.outputs[MOMENTS].reshape(-1, 3)
    assert len(picked) == K and len(moments) >= 1

    # the curve: one point per sampled frame, at the API's time and score (JSON carries both exactly: 1e-9), in
    # time order, the picked ones marked
    points = shown(browser, "return [...document.querySelectorAll('#curve circle.point')].map(c => [Number(c.dataset."
                            "seek), Number(c.dataset.score), Number(c.dataset.frame), c.classList.contains('picked'),"
                            " Number(c.getAttribute('cx'))])")
    assert len(points) == len(scores) == 24
    np.testing.assert_allclose([p[0] for p in points], times, rtol=0, atol=1e-9)
    np.testing.assert_allclose([p[1] for p in points], scores, rtol=0, atol=1e-9)
    assert [p[2] for p in points] == frames and [p[2] for p in points if p[3]] == picked
    assert all(a[4] < b[4] for a, b in zip(points, points[1:], strict=False))

    # the picked frames: the server's JPEGs at the page's size, each with its time and score
    assert wait_until(lambda d=browser: shown(d, "return [...document.querySelectorAll('#thumbs img')]"
                                              ".every(i => i.complete && i.naturalWidth > 0)"), 10)
    thumbs = shown(browser, "return [...document.querySelectorAll('#thumbs .thumb')].map(b => [Number(b.dataset.frame)"
                            ", Number(b.dataset.seek), Number(b.dataset.score), b.querySelector('.when').textContent,"
                            " b.querySelector('img').naturalWidth, b.querySelector('img').naturalHeight])")
    assert [t[0] for t in thumbs] == picked
    for frame, at, score, when, width, height in thumbs:
        i = frames.index(frame)
        assert abs(at - times[i]) <= 1e-9 and abs(score - scores[i]) <= 1e-9
        assert abs(float(when.removesuffix(" s")) - times[i]) <= 0.005 + 1e-9, when  # shown to 2 decimals
        assert max(width, height) == THUMBNAIL_SIZE
    pixels = page_pixels(browser)
    for got, jpeg in zip(pixels, api.images(), strict=True):  # the same JPEG, decoded by Chromium and by PIL
        assert got.shape == jpeg.shape
        assert np.abs(got.astype(int) - jpeg.astype(int)).mean() <= 1.0  # decoders round differently: 1 level

    # the moments, best first, at the API's times (FP32 in JSON: exact as well)
    listed = shown(browser, "return [...document.querySelectorAll('#moments .moment-item')].map(b => "
                            "Number(b.dataset.seek))")
    np.testing.assert_allclose(listed, moments[:, 0], rtol=0, atol=1e-9)
    assert len(browser.find_elements(CSS, "#curve rect.moment")) == len(moments)
    timing = dict(zip(*[[e.text for e in browser.find_elements(CSS, f"#timing {t}")] for t in ("dt", "dd")],
                      strict=True))
    assert timing["sampled frames"] == "24" and timing["picked"] == f"{K} frames" and timing["answered in"]
    # no script error, no load the policy refused, no request that failed, all along
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def page_pixels(browser: WebDriver) -> list[np.ndarray]:
    """The picked frames as the page shows them, RGB [H, W, 3]: each image drawn on a canvas and read back."""
    raw = shown(browser, "return [...document.querySelectorAll('#thumbs img')].map(i => {"
                         "const c = document.createElement('canvas'); c.width = i.naturalWidth;"
                         "c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
                         "return [c.height, c.width, Array.from(g.getImageData(0, 0, c.width, c.height).data)]; })")
    return [np.array(data, dtype=np.uint8).reshape(h, w, 4)[..., :3] for h, w, data in raw]


def test_a_click_on_a_moment_or_a_frame_moves_the_player_there(browser: WebDriver, server: TritonServer,
                                                               sample: tuple[Path, bytes, str]) -> None:
    path, _, instruction = sample
    open_page(browser, server)
    press_score(browser, path, instruction, top_k=K)
    assert page_state(browser)[0] == "done", page_state(browser)
    assert wait_until(lambda d=browser: shown(d, "return document.getElementById('player').readyState >= 1"), 10)
    assert abs(shown(browser, "return document.getElementById('player').duration") - 24.0) < 0.1  # the local file

    def moved_to(element: Any) -> float:
        target = float(element.get_attribute("data-seek"))
        element.click()
        assert wait_until(lambda: abs(shown(browser, "return document.getElementById('player').currentTime")
                                      - target) < 1e-3, 10), target
        return target

    start = moved_to(browser.find_element(CSS, "#moments .moment-item"))
    assert 0 < start < 24
    last = browser.find_elements(CSS, "#thumbs .thumb")[-1]
    assert moved_to(last) != start
    assert moved_to(browser.find_element(CSS, "#curve rect.moment")) == start


def test_a_hostile_instruction_is_shown_as_text(browser: WebDriver, server: TritonServer,
                                                sample: tuple[Path, bytes, str]) -> None:
    open_page(browser, server)
    press_score(browser, sample[0], HOSTILE)
    assert page_state(browser)[0] == "done", page_state(browser)
    assert browser.find_element(ID, "asked").get_attribute("textContent") == HOSTILE
    assert shown(browser, "return document.querySelectorAll('img[src=\"x\"]').length") == 0
    assert shown(browser, "return typeof window.__pwned") == "undefined"


def test_a_refused_request_shows_the_apis_own_message(browser: WebDriver, server: TritonServer,
                                                      sample: tuple[Path, bytes, str], tmp_path: Path) -> None:
    path = sample[0]
    words = " ".join(["where"] * 40)  # over the session server's 32 instruction tokens
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"these are notes, not a video\n" * 40)
    for file, instruction in ((path, words), (not_a_video, "When is the red circle visible?")):
        status, message = api_error(server, file.read_bytes(), instruction)
        open_page(browser, server)
        press_score(browser, file, instruction)
        shows, line, error = page_state(browser)
        assert shows == "error" and line.startswith(f"Refused (HTTP {status})"), (line, error)
        assert error == message and message, (error, message)
        assert browser.find_element(ID, "result").get_attribute("hidden") is not None  # nothing to show


def test_one_picked_frame_reads_1_frame(browser: WebDriver, server: TritonServer,
                                        sample: tuple[Path, bytes, str]) -> None:
    """Catches: "1 frames"."""
    path, _, instruction = sample
    open_page(browser, server)
    press_score(browser, path, instruction, top_k=1)
    shows, line, _ = page_state(browser)
    assert shows == "done" and line.endswith("24 sampled frames, 1 picked."), line
    rows = shown(browser, "return [...document.querySelectorAll('#timing dt')].map(dt => [dt.textContent, "
                          "dt.nextElementSibling.textContent])")
    assert ["picked", "1 frame"] in rows, rows


def test_a_page_opened_while_the_server_starts_says_so_and_updates_itself_when_it_is_ready(
        browser: WebDriver, tmp_path: Path) -> None:
    """Catches: opened before tritonserver was ready, the page said the media roots could not be read (connection
    refused) and kept saying it once the server was ready. Here the model's load waits for a file the test writes
    while the page is open."""
    import threading

    from tests.support.browser import NOT_READY
    from tests.support.launch import write_model
    from videoitg.launch.server import ServerOptions, TritonServer

    gate = tmp_path / "gate"
    write_model(tmp_path / "repo", TOP, init=f"[time.sleep(0.1) for _ in iter(lambda: pathlib.Path({str(gate)!r})"
                                                ".exists(), True)]")
    srv = TritonServer(tmp_path / "repo", ServerOptions(exit_timeout_s=3, stub_watchdog_s=0),
                       log_path=tmp_path / "s.log")
    starting = threading.Thread(target=srv.start, args=(120,))
    starting.start()
    try:
        assert wait_until(lambda: srv.front_pid is not None and srv.http_port > 0, 60)

        def roots() -> str:
            try:
                return browser.find_element(ID, "roots").text
            except Exception:  # the page not loaded yet
                return ""

        assert wait_until(lambda: _opened(browser, srv), 60)
        assert wait_until(lambda: roots().startswith(NOT_READY), 20), roots()
        assert shown(browser, "return document.body.dataset.server") == "starting"
        gate.touch()
        starting.join(120)
        assert not starting.is_alive() and srv.running
        assert wait_until(lambda: roots().startswith("This server reads no video by reference"), 20), roots()
        assert shown(browser, "return document.body.dataset.server") == "ready"
    finally:
        gate.touch()
        starting.join(120)
        srv.stop()


def _opened(browser: WebDriver, srv: TritonServer) -> bool:
    """The page of `srv`'s front, loaded (the front answers before tritonserver does)."""
    try:
        browser.get(f"http://{srv.http_url}/")
        return browser.find_element(ID, "roots") is not None
    except Exception:
        return False
