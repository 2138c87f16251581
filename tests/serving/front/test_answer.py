"""The answer endpoint's transport (front/answer.py) in this process, in front of stand-ins for tritonserver's HTTP
endpoint and for the video-LLM: the body, its video and their share of the budget given back once the frames are
picked; a body still arriving at a stop; the media roots asked of tritonserver only for a file, each way it fails to
give them typed; a client that leaves while the video-LLM's answer opens; the video-LLM's connections closed with
the port. The endpoint against a real tritonserver and video-LLM: tests/serving/test_answer_endpoint.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")
pytest.importorskip("tritonclient.http", reason="the serve extra (tritonclient) is not installed")

import numpy as np
from aiohttp import web
from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

from tests.support.front import exchange, http_stand_in, running_front, status, without_gc
from tests.support.server import settled
from videoitg.answer.upstream import ChatUpstream
from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.tensors import frame_outputs, result_outputs
from videoitg.outputs import GroundingResult
from videoitg.request.options import RequestOptions
from videoitg.serving.front import bounds, config

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JPEG = b"\xff\xd8\xff\xe0 a frame"
RESULT = GroundingResult([0.5, 2.0, -1.0], [0, 25, 50], [0.0, 1.0, 2.0], duration=3.0)  # frame 25 is the best
ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}


def inference_answer() -> tuple[bytes, int]:
    """A KServe v2 binary answer to the endpoint's grounding request (its top frame, as JPEG), and its JSON
    header's length."""
    applied = RequestOptions(top_k=1, ranking_rule="released")
    arrays = {**result_outputs(RESULT, applied), **frame_outputs([JPEG], "jpeg")}
    outputs, data = [], []
    for name, a in arrays.items():
        datatype = np_to_triton_dtype(a.dtype)
        raw = serialize_byte_tensor(a).item() if datatype == "BYTES" else np.ascontiguousarray(a).tobytes()
        outputs.append({"name": name, "datatype": datatype, "shape": [1, *a.shape],
                        "parameters": {"binary_data_size": len(raw)}})
        data.append(raw)
    header = json.dumps({"model_name": "videoitg", "outputs": outputs}).encode()
    return header + b"".join(data), len(header)


class Triton:
    """Stands where tritonserver's HTTP endpoint stands (`handle`): answers the model config with `configs` in turn
    (status and body; None: no answer within the front's bound), the last one from then on, and every inference
    with `inference_answer`; `paths` says what was asked."""

    def __init__(self, *configs: tuple[int, bytes] | None):
        self.configs = list(configs) or [(200, b"{}")]
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path.endswith("/config"):
            answer = self.configs.pop(0) if len(self.configs) > 1 else self.configs[0]
            if answer is None:
                await asyncio.sleep(5)
                return web.Response(status=503)
            return web.Response(status=answer[0], body=answer[1], content_type="application/json")
        async for _ in request.content.iter_chunked(1 << 16):  # read, keeping nothing
            pass
        body, n = inference_answer()
        return web.Response(body=body, headers={"Inference-Header-Content-Length": str(n),
                                                "Content-Type": "application/octet-stream"})


async def plain_llm(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(ANSWER)


@asynccontextmanager
async def endpoint(triton: Handler, llm: Handler = plain_llm,
                   **kw: Any) -> AsyncIterator[tuple[int, config.FrontCounters]]:
    """(the front's HTTP port, its counters) with the answer endpoint on, `triton` in tritonserver's place and `llm`
    in the video-LLM's."""
    runner, llm_port = await http_stand_in(llm)
    try:
        async with running_front(triton, answer_upstream=f"http://127.0.0.1:{llm_port}/v1", **kw) as (port, _, c):
            yield port, c
    finally:
        await runner.cleanup()


def chat(url: str, **fields: Any) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": url}}, {"type": "text", "text": "when does the dog jump?"}]}],
        **fields}).encode()


def data_url(video: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(video).decode()


def post_head(length: int) -> bytes:
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode()


def answered(raw: bytes) -> tuple[int, Any]:
    body = raw.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in raw else b""
    return status(raw), json.loads(body) if body else None


def test_the_body_its_video_and_their_budget_are_given_back_once_the_frames_are_picked(
        budgets: list[bounds.ByteBudget]) -> None:
    """While the video-LLM answers, the request holds none of its body's bytes in the budget, and neither the
    video nor its data URL in memory (traced, garbage collection off): only the question and the frames."""
    video = os.urandom(3 << 20)
    request = chat(data_url(video))
    held: dict[str, int] = {}

    async def run() -> bytes:
        asked, go = asyncio.Event(), asyncio.Event()

        async def llm(r: web.Request) -> web.Response:
            held["forwarded"] = len(await r.read())
            asked.set()
            await go.wait()
            return web.json_response(ANSWER)

        async with endpoint(Triton().handle, llm, max_request_bytes=16 << 20) as (port, _):
            data = post_head(len(request)) + request
            base = tracemalloc.get_traced_memory()[0]
            answer = asyncio.ensure_future(exchange(port, data))
            await asyncio.wait_for(asked.wait(), 20)
            held["budget"], held["traced"] = budgets[-1].held, tracemalloc.get_traced_memory()[0] - base
            go.set()
            return await answer

    answer = without_gc(run())
    code, body = answered(answer)
    assert code == 200 and body["videoitg"]["frames"] == [25] and body["choices"] == ANSWER["choices"], answer[:300]
    assert held["budget"] == 0, held
    assert held["forwarded"] < 10_000 and held["traced"] < len(video) // 2, held


def test_an_answer_body_still_arriving_at_a_stop_is_refused_at_once(budgets: list[bounds.ByteBudget]) -> None:
    """As on the KServe route: a stop refuses a body still arriving (503, `Connection: close`, retry elsewhere)
    instead of waiting for it past the port's shutdown bound, and gives its bytes back."""

    async def run() -> tuple[bytes, float]:
        async with endpoint(Triton().handle, body_idle_s=30) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post_head(1 << 20) + b'{"messages": [')
            await writer.drain()
            assert await settled(lambda: budgets[-1].held > 0, 5)
            t0 = time.monotonic()
        try:  # the port stopped at the block's end
            return await asyncio.wait_for(reader.read(), 5), time.monotonic() - t0
        finally:
            writer.close()

    answer, took = asyncio.run(run())
    code, body = answered(answer)
    assert code == 503 and body["error"]["code"] == "stopping" and b"Retry-After: 1" in answer, answer[:300]
    assert took < 1.0 and budgets[-1].held == 0, (took, budgets[-1].held)  # 1.0: the port's shutdown_s


def test_the_media_roots_are_asked_for_a_file_only_and_kept_once_given(tmp_path: Path) -> None:
    """A data URL never asks tritonserver for the model config; a file does, until it answers: no answer within
    the bound is 503 (`selection_failed`, counted unavailable, try again), then the roots it gives are kept."""
    (tmp_path / "v.mp4").write_bytes(b"video bytes")
    roots = json.dumps({"parameters": {MEDIA_ROOTS: {"string_value": json.dumps([str(tmp_path)])}}}).encode()
    triton = Triton(None, (200, roots))
    file_url = chat(f"file://{tmp_path}/v.mp4")

    async def run() -> tuple[list[tuple[int, Any]], list[list[str]], dict[str, int]]:
        answers, asked = [], []
        async with endpoint(triton.handle, pass_timeout_s=0.5) as (port, counters):
            for request in (chat(data_url(b"video bytes")), file_url, file_url, file_url):
                answers.append(answered(await exchange(port, post_head(len(request)) + request)))
                asked.append(list(triton.paths))
                triton.paths.clear()
        return answers, asked, dict(counters.unavailable)

    answers, asked, unavailable = asyncio.run(run())
    config_path, infer_path = "/v2/models/videoitg/config", "/v2/models/videoitg/infer"
    assert asked == [[infer_path], [config_path], [config_path, infer_path], [infer_path]], asked
    assert [code for code, _ in answers] == [200, 503, 200, 200], answers
    err = answers[1][1]["error"]
    assert err["code"] == "selection_failed" and "the grounding server did not answer" in err["message"], err
    assert answers[3][1]["videoitg"]["frames"] == [25] and unavailable == {"http": 1}, (answers[3], unavailable)


@pytest.mark.parametrize(("config_answer", "message"), [
    ((500, b'{"error": "internal"}'), "model config answered 500: internal"),
    ((200, b"not json"), "model config is malformed"),
    ((200, b"[]"), "model config is malformed"),
    ((200, b'{"parameters": []}'), "model config is malformed"),
    ((200, json.dumps({"parameters": {MEDIA_ROOTS: {"string_value": 3}}}).encode()), "model config is malformed"),
    ((200, json.dumps({"parameters": {MEDIA_ROOTS: {"string_value": "videos"}}}).encode()),
     "media_roots parameter must be a JSON list of absolute directories"),
])
def test_media_roots_tritonserver_gives_wrong_are_a_typed_502(tmp_path: Path, config_answer: tuple[int, bytes],
                                                               message: str) -> None:
    request = chat(f"file://{tmp_path}/v.mp4")

    async def run() -> tuple[int, Any]:
        async with endpoint(Triton(config_answer).handle) as (port, _):
            return answered(await exchange(port, post_head(len(request)) + request))

    code, body = asyncio.run(run())
    assert code == 502 and body["error"]["code"] == "selection_failed" and message in body["error"]["message"], body


@pytest.mark.parametrize("stage", ["headers", "body"])
def test_a_client_that_leaves_while_the_answer_opens_closes_the_video_llms_request(stage: str) -> None:
    """A streamed request whose video-LLM has not sent its answer's headers yet, or answered in one piece whose
    body has not all come: the client closes, and the front closes its connection to the video-LLM within about
    GONE_POLL_S, not once the video-LLM answers."""
    request = chat(data_url(b"video bytes"), stream=True)

    async def run() -> float:
        seen, closed = asyncio.Event(), asyncio.Event()

        async def llm(r: web.Request) -> web.StreamResponse:
            await r.read()
            response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
            if stage == "body":
                await response.prepare(r)
                await response.write(b'{"id": ')
            seen.set()
            for _ in range(500):
                if r.transport is None or r.transport.is_closing():
                    closed.set()
                    break
                await asyncio.sleep(0.02)
            return response

        async with endpoint(Triton().handle, llm) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post_head(len(request)) + request)
            await asyncio.wait_for(seen.wait(), 20)
            writer.close()
            t0 = time.monotonic()
            await asyncio.wait_for(closed.wait(), 5)
            return time.monotonic() - t0

    assert asyncio.run(run()) < 2.0


def test_the_video_llms_connections_close_with_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[ChatUpstream] = []
    close = ChatUpstream.close

    async def recorded(self: ChatUpstream) -> None:
        closed.append(self)
        await close(self)

    monkeypatch.setattr(ChatUpstream, "close", recorded)

    async def run() -> bytes:
        async with endpoint(Triton().handle) as (port, _):
            answer = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert not closed
            return answer

    answer = asyncio.run(run())
    assert status(answer) == 200, answer[:200]
    assert len(closed) == 1 and closed[0]._session is not None and closed[0]._session.closed


@pytest.mark.parametrize("stage", ["open", "read"])
def test_a_handler_cancelled_while_its_file_is_opened_or_read_leaks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """A stop cancels a handler still running: the worker thread opening or reading its video runs on, and what it
    opened is closed, what it holds stays in the budget until the read ends, then is given back."""
    from videoitg.paths import MediaRoots
    from videoitg.serving.front import answer as front_answer

    video = tmp_path / "v.mp4"
    video.write_bytes(b"video bytes")
    slow = {"open": front_answer._open, "read": front_answer.read_opened}

    def slowly(*args: Any) -> Any:
        time.sleep(0.4)  # a slow filesystem
        return slow[stage](*args)

    monkeypatch.setattr(front_answer, "_open" if stage == "open" else "read_opened", slowly)
    cfg = config.FrontConfig(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0, triton_http="127.0.0.1:1",
                             triton_grpc="127.0.0.1:1", triton_metrics="127.0.0.1:1", models=("videoitg",),
                             max_request_bytes=1 << 20, answer_upstream="http://127.0.0.1:1/v1")
    budget = bounds.ByteBudget(1 << 20)

    def open_fds() -> list[str]:
        names = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                pass
        return [n for n in names if n == str(video)]

    async def run() -> tuple[int, int, list[str]]:
        ep = front_answer.AnswerEndpoint(cfg)
        ep.roots = MediaRoots.of([str(tmp_path)])
        port: Any = type("Port", (), {"budget": budget})()
        task = asyncio.ensure_future(ep._pick(port, None, [chat(f"file://{video}")]))  # type: ignore[arg-type]
        await asyncio.sleep(0.2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        held_at_cancel = budget.held
        await asyncio.sleep(0.6)  # the worker thread is done
        return held_at_cancel, budget.held, open_fds()

    held_at_cancel, held_after, fds = asyncio.run(run())
    assert held_at_cancel == (len(b"video bytes") if stage == "read" else 0), held_at_cancel
    assert held_after == 0 and fds == [], (held_after, fds)
