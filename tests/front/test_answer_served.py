"""Select, then answer, against a real video-LLM: a tiny random LLaVA behind `transformers serve`
(benchmarks/answer/vlm.py), with a recording byte relay in front of it, so each test reads what the video-LLM received
without standing in for it. The frames it gets are the ones `videoitg score --top-k K` picks in-process, as JPEGs,
chronological, each after its timestamp, then the question."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support import require

pytest.importorskip("aiohttp", reason="the serve extra")
pytest.importorskip("tritonclient.http", reason="the serve extra")


from benchmarks.answer.vlm import IMAGE_TOKENS, ServedVLM
from tests.support.recording import Received, RecordingRelay
from tests.support.server import metric_value, served, skip_without_tritonserver, wait_until
from tests.support.video import write_clip
from videoitg.answer.handoff import frame_label
from videoitg.commands.cli import main
from videoitg.decode.export import picked_images
from videoitg.launch.ports import free_port
from videoitg.launch.server import ServerOptions, TritonServer
from videoitg.outputs import GroundingResult
from videoitg.repository.generator import RepoSpec

require(("fastapi",), "transformers serve needs transformers[serving] (the dev extra)")

if TYPE_CHECKING:
    import openai

skip_without_tritonserver()
pytestmark = pytest.mark.server  # its own tritonserver and video-LLM: the module's tests run in one worker

ASK = "When is the picture brightest?"
K = 4
SIZE = 96  # the frames' longer side


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:  # 250 frames at 25 fps: 10 sampled frames at 1 fps
    return write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=250, gop=10, width=160, height=96)


@pytest.fixture
def upstream(relay: RecordingRelay) -> str:
    """The video-LLM's base URL through the relay, its record cleared."""
    relay.clear()
    return f"http://127.0.0.1:{relay.port}/v1"


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Path:
    """The server's media root, holding the clip."""
    root = tmp_path_factory.mktemp("media")
    shutil.copy(clip, root / "c.mp4")
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, relay: RecordingRelay, media: Path) -> Iterator[TritonServer]:
    """`videoitg serve --media-root MEDIA --answer-upstream RELAY` (the CPU repository of the embedded checkpoint)."""
    options = ServerOptions(answer_upstream=f"http://127.0.0.1:{relay.port}/v1")
    yield from served(RepoSpec(target="cpu", media_roots=(str(media.resolve()),)), tmp_path_factory, options)


def other_front(srv: TritonServer, upstream: str | None, cfg: dict[str, Any] | None = None) -> Iterator[str]:
    """One more front process on `srv`'s tritonserver (its configuration and environment, or `cfg`), with another
    answer upstream (None: the endpoint off); yields its HTTP address."""
    command = srv.front_command()
    cfg = cfg or json.loads(command[-1])
    ports = [free_port() for _ in range(3)]
    cfg.update(http_port=ports[0], grpc_port=ports[1], metrics_port=ports[2], answer_upstream=upstream)
    proc = subprocess.Popen([*command[:-1], json.dumps(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=srv.front_environment())  # the inference key tritonserver asks of the front
    try:
        assert wait_until(lambda: _answers(f"http://127.0.0.1:{ports[0]}/v2/health/live"), 30)
        yield f"127.0.0.1:{ports[0]}"
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def down_front(server: TritonServer) -> Iterator[str]:
    """A front whose video-LLM is down (nothing listens at its address)."""
    yield from other_front(server, f"http://127.0.0.1:{free_port()}/v1")


@pytest.fixture(scope="module")
def plain_front(server: TritonServer) -> Iterator[str]:
    """A front without the answer endpoint."""
    yield from other_front(server, None)


@pytest.fixture
def client(server: TritonServer) -> openai.OpenAI:
    import openai  # seconds: imported by the tests that use it, not by every worker's collection

    return openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="-", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def picked(scorer, clip: Path) -> tuple[GroundingResult, list[tuple[int, float, bytes]]]:
    """`videoitg score --top-k K` in-process: the result, and the top-K frames (number, timestamp, JPEG at SIZE)."""
    result = scorer.score(clip, ASK)
    images = picked_images(clip, result, result.top_k_positions(K), SIZE, jpeg=True)
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


# ---- the endpoint ------------------------------------------------------------------------------------------------
def data_url(clip: Path) -> str:
    return "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()


def ask(video_url: str, question: str = ASK, **fields: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": video_url}},
                                                      {"type": "text", "text": question}]}], **fields}


def test_the_endpoint_sends_the_in_process_picks_and_passes_every_other_field(client, clip: Path, relay, picked,
                                                                              vlm: ServedVLM) -> None:
    relay.clear()
    earlier = [{"role": "system", "content": "Answer in one word."}, {"role": "user", "content": "Hello"},
               {"role": "assistant", "content": "Hi"}]
    request = ask(data_url(clip), model=vlm.model, max_tokens=3, temperature=0.0, top_p=0.5, seed=7)
    request["messages"] = [*earlier, *request["messages"]]
    answer = client.chat.completions.create(**request, extra_body={"videoitg": {"top_k": K, "frame_size": SIZE}})
    result, frames = picked
    extra = answer.model_extra["videoitg"]
    assert extra["frames"] == [n for n, _, _ in frames] == result.top_k_frames(K)
    assert extra["timestamps"] == [round(t, 3) for _, t, _ in frames]
    assert extra["select_s"] > 0 and extra["moments"] and len(extra["scores"]) == K
    (body,) = chat_completions(relay.received())
    assert_frames_sent(body, frames, ASK)
    assert body["messages"][:3] == earlier
    assert {k: v for k, v in body.items() if k != "messages"} == {k: v for k, v in request.items()
                                                                  if k != "messages"}
    assert answer.usage.prompt_tokens - prompt_tokens(vlm, without_images(body)) == K * IMAGE_TOKENS


def test_a_file_under_the_media_root_and_the_default_top_k(client, media: Path, relay, scorer, clip: Path,
                                                           vlm: ServedVLM) -> None:
    relay.clear()
    answer = client.chat.completions.create(**ask(f"file://{media.resolve()}/c.mp4", model=vlm.model, max_tokens=1))
    result = scorer.score(clip, ASK)
    (body,) = chat_completions(relay.received())
    # the server's default top-K, the default frame size
    images = picked_images(clip, result, result.top_k_positions(32), 448, jpeg=True)
    assert answer.model_extra["videoitg"]["frames"] == result.top_k_frames(32)
    assert_frames_sent(body, [(result.frame_indices[p], result.timestamps[p], j) for p, j in images], ASK)


@pytest.fixture(scope="module")
def small_front(server: TritonServer, relay: RecordingRelay, clip: Path) -> Iterator[str]:
    """A front whose request bound is half the clip's size: the clip cannot come in a request, only by file://."""
    cfg = json.loads(server.front_command()[-1])
    cfg["max_request_bytes"] = cfg["max_video_bytes"] = clip.stat().st_size // 2
    yield from other_front(server, f"http://127.0.0.1:{relay.port}/v1", cfg)


def test_a_file_over_the_request_bound_is_answered_by_reference(small_front: str, media: Path, relay, picked,
                                                                clip: Path, vlm: ServedVLM) -> None:
    """A long video, what `file://` is for: tritonserver reads it by reference (VIDEO_URI) and decodes the frames
    from it, exactly the frames `videoitg score --top-k K` picks in-process; as a data URL it is refused."""
    relay.clear()
    request = ask(f"file://{media.resolve()}/c.mp4", model=vlm.model, max_tokens=1,
                  videoitg={"top_k": K, "frame_size": SIZE})
    status, answer = post(small_front, json.dumps(request).encode())
    assert status == 200, answer
    result, frames = picked
    assert answer["videoitg"]["frames"] == [n for n, _, _ in frames] == result.top_k_frames(K)
    (body,) = chat_completions(relay.received())
    assert_frames_sent(body, frames, ASK)
    status, answer = post(small_front, json.dumps(ask(data_url(clip), videoitg={"top_k": K})).encode())
    assert status == 413 and answer["error"]["code"] == "too_large", answer


def test_a_stream_passes_through_with_the_selection_first(client, clip: Path, relay, vlm: ServedVLM) -> None:
    request = ask(data_url(clip), model=vlm.model, max_tokens=6, temperature=0.0,
                  extra_body={"videoitg": {"top_k": 2, "frame_size": SIZE}})
    plain = client.chat.completions.create(**request)
    relay.clear()
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert chunks[0].model_extra["videoitg"] == {**plain.model_extra["videoitg"],
                                                 "select_s": chunks[0].model_extra["videoitg"]["select_s"]}
    assert all("videoitg" not in c.model_extra for c in chunks[1:])
    # The same greedy tokens (the stream's text leaves out a last incomplete UTF-8 sequence; the random model's
    # tokens are often byte pieces).
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert plain.choices[0].message.content.startswith("".join(c.choices[0].delta.content or "" for c in chunks
                                                               if c.choices))
    assert len(chunks) > 3  # relayed as events, not one piece
    (body,) = chat_completions(relay.received())
    assert body["stream"] is True


def post(address: str, body: bytes, path: str = "/v1/chat/completions") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"http://{address}{path}", body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_each_bad_request_is_refused_with_its_cause_and_never_reaches_the_video_llm(server, clip: Path, media: Path,
                                                                                     relay, tmp_path: Path) -> None:
    outside = tmp_path / "outside.mp4"
    shutil.copy(clip, outside)
    (media / "link.mp4").symlink_to(outside)
    video = {"type": "video_url", "video_url": {"url": data_url(clip)}}
    cases = [
        (b"{not json", "invalid_request", "not valid JSON"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "video_part", "0 video parts"),
        (json.dumps({"messages": [{"role": "user", "content": [video, video, {"type": "text", "text": "q"}]}]}
                    ).encode(), "video_part", "2 video parts"),
        (json.dumps(ask(data_url(clip), videoitg={"top_k": 0})).encode(), "videoitg_option", "top_k must be"),
        (json.dumps(ask(data_url(clip), videoitg={"top_k": "all"})).encode(), "videoitg_option", "top_k must be"),
        (json.dumps(ask(f"file://{outside}")).encode(), "video_refused", "OutsideRootsError"),
        (json.dumps(ask(f"file://{media}/link.mp4")).encode(), "video_refused", "OutsideRootsError"),
        (json.dumps(ask(f"file://{media}/missing.mp4")).encode(), "video_refused", "MediaNotFoundError"),
        (json.dumps(ask("https://example.com/v.mp4")).encode(), "video_refused", "nothing is fetched"),
        (json.dumps(ask("data:video/mp4;base64,AAAAAAAAAAAA")).encode(), "selection_failed", "NotAVideoError"),
    ]
    relay.clear()
    for body, code, message in cases:
        status, answer = post(server.http_url, body)
        assert status == 400, (code, answer)
        err = answer["error"]
        assert err["code"] == code and message in err["message"], err
        assert err["type"] == ("selection_error" if code == "selection_failed" else "invalid_request_error")
    assert relay.received() == []
    metrics = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert metric_value(metrics, "videoitg_front_answer_failed", code="video_refused", status="400") >= 4
    assert metric_value(metrics, "videoitg_front_answer_failed", code="selection_failed", status="400") >= 1


def test_an_upstream_refusal_keeps_its_status_and_text(client, clip: Path) -> None:
    """`transformers serve` is pinned to its model: another name is refused by the video-LLM itself."""
    import openai

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**ask(data_url(clip), model="another-model", max_tokens=1),
                                       extra_body={"videoitg": {"top_k": 1, "frame_size": 32}})
    assert e.value.status_code == 400
    err = e.value.body
    assert err["type"] == "upstream_error" and err["code"] == "upstream_refused"
    assert "answered 400" in err["message"] and "pinned" in err["message"]


def test_a_body_over_the_bound_is_refused_by_the_front(server) -> None:
    cfg = json.loads(server.front_command()[-1])
    req = urllib.request.Request(f"http://{server.http_url}/v1/chat/completions", b"x",
                                 {"Content-Type": "application/json",
                                  "Content-Length": str(cfg["max_request_bytes"] + 1)})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 413
    assert json.loads(e.value.read())["error"]["code"] == "too_large"


def test_a_video_llm_that_is_down_is_502(down_front: str, clip: Path) -> None:
    status, answer = post(down_front, json.dumps(ask(data_url(clip), model="m", videoitg={"top_k": 1})).encode())
    assert status == 502 and answer["error"]["code"] == "upstream_unavailable"
    assert "cannot be reached" in answer["error"]["message"]


def test_without_the_flag_the_paths_are_not_served(plain_front: str) -> None:
    for path in ("/v1/chat/completions", "/v1/models"):
        status, _ = post(plain_front, b"{}", path)
        assert status == 404


def test_models_are_the_video_llms(client, vlm: ServedVLM) -> None:
    assert [m.id for m in client.models.list()] == [vlm.model]


def test_a_client_that_leaves_cancels_the_video_llms_request(server, clip: Path, relay, vlm: ServedVLM) -> None:
    """A long answer (its end-of-text token forbidden: 8000 tokens, some 20 s of this tiny model on 2 cores and
    ~700 kB of events), left after its first event: the front ends its connection to the video-LLM at once, and
    the video-LLM sends nothing more."""
    from transformers import AutoTokenizer

    end = AutoTokenizer.from_pretrained(vlm.model).convert_tokens_to_ids("<|im_end|>")
    relay.clear()
    body = json.dumps(ask(data_url(clip), model=vlm.model, max_tokens=8000, stream=True, temperature=0.0,
                          logit_bias={str(end): -100.0}, videoitg={"top_k": 1, "frame_size": 32})).encode()
    host, port = server.http_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while b"videoitg" not in got:
            data = sock.recv(65536)
            assert data, f"the front closed the connection before the selection came: {got[:300]!r}"
            got += data
        assert got.startswith(b"HTTP/1.1 200")
    marker = b'"max_tokens":8000'  # the forwarded request's compact JSON
    assert wait_until(lambda: relay.ended(marker), 5), "the front kept its connection to the video-LLM"
    sent = relay.answered(marker)
    time.sleep(2)
    assert relay.answered(marker) == sent < 100_000, "the video-LLM went on answering"


def test_a_client_that_leaves_before_a_plain_answer_cancels_it_too(server, clip: Path, relay, vlm: ServedVLM) -> None:
    """The same long answer, not streamed: the client sends its request and closes; the front ends its connection to
    the video-LLM within about a second, instead of waiting the answer out for nobody."""
    from transformers import AutoTokenizer

    end = AutoTokenizer.from_pretrained(vlm.model).convert_tokens_to_ids("<|im_end|>")
    relay.clear()
    body = json.dumps(ask(data_url(clip), model=vlm.model, max_tokens=8001, temperature=0.0,
                          logit_bias={str(end): -100.0}, videoitg={"top_k": 1, "frame_size": 32})).encode()
    host, port = server.http_url.rsplit(":", 1)
    marker = b'"max_tokens":8001'
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_until(lambda: relay.saw(marker), 30), "the request did not reach the video-LLM"
    left = time.monotonic()
    assert wait_until(lambda: relay.ended(marker), 10), "the front waited the answer out"
    assert time.monotonic() - left < 5


def test_the_command_through_a_server_sends_the_servers_frames(server, clip: Path, upstream: str, relay,
                                                               picked) -> None:
    out = io.StringIO()
    with redirect_stdout(out):
        rc = main(["answer", str(clip), "-q", ASK, "--upstream", upstream, "--top-k", str(K), "--frame-size",
                   str(SIZE), "--max-tokens", "2", "--server", server.grpc_url, "--json"])
    assert rc == 0
    _, frames = picked
    assert json.loads(out.getvalue())["videoitg"]["frames"] == [n for n, _, _ in frames]
    (body,) = chat_completions(relay.received())
    assert_frames_sent(body, frames, ASK)  # the server's JPEGs are the in-process export's, byte for byte


@pytest.fixture(scope="module")
def pinned_front(server: TritonServer, relay: RecordingRelay, vlm: ServedVLM) -> Iterator[str]:
    """A front started with --answer-model: the video-LLM's own model name."""
    command = server.front_command()
    cfg = json.loads(command[-1])
    cfg["answer_model"] = vlm.model
    yield from other_front(server, f"http://127.0.0.1:{relay.port}/v1", cfg)


def test_answer_model_replaces_the_clients_model(pinned_front: str, clip: Path, relay, vlm: ServedVLM) -> None:
    relay.clear()
    status, answer = post(pinned_front, json.dumps(ask(data_url(clip), model="whatever-the-client-says", max_tokens=1,
                                                       videoitg={"top_k": 1, "frame_size": 32})).encode())
    assert status == 200, answer
    (body,) = chat_completions(relay.received())
    assert body["model"] == vlm.model


@pytest.mark.parametrize(("flags", "message"), [
    (["--answer-upstream", "ftp://127.0.0.1/v1"], "must be an http"),
    (["--answer-model", "m"], "give --answer-upstream too"),
    (["--answer-upstream", "http://127.0.0.1:1/v1", "--answer-timeout", "0"], "--answer-timeout must be > 0"),
])
def test_serve_refuses_answer_flags_that_do_not_go_together(flags: list[str], message: str, capsys) -> None:
    ports = [str(free_port()) for _ in range(3)]
    assert main(["serve", "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2], *flags]) == 2
    assert message in capsys.readouterr().err
