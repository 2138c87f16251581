"""The answer endpoint's transport (front/answer.py) in this process, in front of stand-ins for tritonserver's HTTP
endpoint and for the video-LLM: a file named to tritonserver by reference, never read; a data URL bounded from its
length; what a request holds within what the budget counts, all of it given back once the frames are picked, and
nothing left referenced after a refusal; a body still arriving at a stop; the media roots asked of tritonserver only
for a file, each way it fails to give them typed; the video-LLM's credentials, misbehaving bytes and statuses; text
that cannot be encoded; an unforeseen failure; a client that leaves while the video-LLM's answer opens or stalls;
what aiohttp's HTTP parser refuses; the video-LLM's connections closed with the port. The endpoint against a real
tritonserver and video-LLM: tests/front/test_answer_served.py."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import threading
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
from videoitg.answer.bounded_json import PARSE_HOLD
from videoitg.answer.videollm import ChatUpstream
from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.tensors import frame_outputs, result_outputs
from videoitg.front import bounds, config
from videoitg.outputs import GroundingResult
from videoitg.request.options import RequestOptions

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
JPEG = b"\xff\xd8\xff\xe0 a frame"
RESULT = GroundingResult([0.5, 2.0, -1.0], [0, 25, 50], [0.0, 1.0, 2.0], duration=3.0)  # frame 25 is the best
ANSWER = {"id": "c1", "object": "chat.completion", "choices": [{"message": {"role": "assistant", "content": "ok"}}]}


def inference_answer(result: GroundingResult = RESULT) -> tuple[bytes, int]:
    """A KServe v2 binary answer to the endpoint's grounding request (its top frame, as JPEG), and its JSON
    header's length."""
    applied = RequestOptions(top_k=1, ranking_rule="released")
    arrays = {**result_outputs(result, applied), **frame_outputs([JPEG], "jpeg")}
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
    with `inference_answer` of `result` (or, with `refuse`, that text as a 400); `paths` says what was asked,
    `inputs` the names of each inference's inputs and `sizes` its body's bytes."""

    def __init__(self, *configs: tuple[int, bytes] | None, refuse: str | None = None,
                 result: GroundingResult = RESULT):
        self.configs = list(configs) or [(200, b"{}")]
        self.refuse, self.result = refuse, result
        self.paths: list[str] = []
        self.inputs: list[list[str]] = []
        self.sizes: list[int] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        if request.path.endswith("/config"):
            answer = self.configs.pop(0) if len(self.configs) > 1 else self.configs[0]
            if answer is None:
                await asyncio.sleep(5)
                return web.Response(status=503)
            return web.Response(status=answer[0], body=answer[1], content_type="application/json")
        header_length, head, size = int(request.headers["Inference-Header-Content-Length"]), b"", 0
        async for chunk in request.content.iter_chunked(1 << 16):  # read, keeping the JSON header only
            head += chunk[:max(0, header_length - len(head))]
            size += len(chunk)
        self.inputs.append([i["name"] for i in json.loads(head)["inputs"]])
        self.sizes.append(size)
        if self.refuse is not None:
            return web.json_response({"error": self.refuse}, status=400)
        body, n = inference_answer(self.result)
        return web.Response(body=body, headers={"Inference-Header-Content-Length": str(n),
                                                "Content-Type": "application/octet-stream"})


async def plain_llm(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response(ANSWER)


@asynccontextmanager
async def endpoint(triton: Handler, llm: Handler = plain_llm, userinfo: str = "",
                   **kw: Any) -> AsyncIterator[tuple[int, config.FrontCounters]]:
    """(the front's HTTP port, its counters) with the answer endpoint on, `triton` in tritonserver's place and `llm`
    in the video-LLM's (its URL with `userinfo`, `user:password@`)."""
    runner, llm_port = await http_stand_in(llm)
    try:
        async with running_front(triton, answer_upstream=f"http://{userinfo}127.0.0.1:{llm_port}/v1",
                                 **kw) as (port, _, c):
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
    """While the video-LLM answers, the request holds in the budget twice the request it forwards and none of its
    body's bytes, and neither the video nor its data URL in memory (traced, garbage collection off): only the
    question and the frames."""
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
    assert held["budget"] == 2 * held["forwarded"], held
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
        async with endpoint(triton.handle, pass_timeout_s=2.0) as (port, counters):  # the stand-in's silence: 5 s
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
    assert err["code"] == "selection_failed", err
    assert "the grounding server (tritonserver) did not answer" in err["message"], err
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


async def until_closed(r: web.Request, closed: asyncio.Event, most_s: float) -> None:
    """A stand-in video-LLM's handler holding its request open until the front closes the connection (then `closed`
    is set), at most `most_s`."""
    for _ in range(int(most_s / 0.02)):
        if r.transport is None or r.transport.is_closing():
            closed.set()
            return
        await asyncio.sleep(0.02)


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
            await until_closed(r, closed, 10.0)
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


@pytest.mark.parametrize("stage", ["check", "decode"])
def test_a_handler_cancelled_while_its_worker_thread_runs_leaks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    """A stop cancels a handler still running: the worker thread checking its file or decoding its data URL runs
    on; what it opened is closed, what it holds (the decoded video, the body it decodes) stays in the budget until
    it ends, then is given back."""
    from videoitg.answer.chat import DataVideo
    from videoitg.front import answer as front_answer
    from videoitg.paths import MediaRoots

    video = tmp_path / "v.mp4"
    video.write_bytes(b"video bytes")
    slow = {"check": front_answer._checked, "decode": DataVideo.decode}

    started, proceed = threading.Event(), threading.Event()

    def slowly(*args: Any) -> Any:  # a slow filesystem, a long video: it runs on until the test lets it go
        started.set()
        assert proceed.wait(30)
        return slow[stage](*args)

    if stage == "check":
        monkeypatch.setattr(front_answer, "_checked", slowly)
    else:
        monkeypatch.setattr(DataVideo, "decode", slowly)
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
        url = f"file://{video}" if stage == "check" else data_url(b"video bytes")
        body = bytearray(chat(url))
        assert budget.take(len(body))
        held = front_answer._Held(budget, len(body))
        held.taken = True
        task = asyncio.ensure_future(ep._pick(port, None, [body], held))  # type: ignore[arg-type]
        assert await settled(started.is_set, 30), "the worker thread never started"
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        held_at_cancel = budget.held
        proceed.set()  # the worker thread ends: what it held is given back, what it opened closed
        await settled(lambda: budget.held == 0 and not open_fds(), 30)
        return held_at_cancel, budget.held, open_fds()

    held_at_cancel, held_after, fds = asyncio.run(run())
    # cancelled while decoding: the decoded video and the body (its data URL) stay held; while checking a file:
    # nothing (the body's bytes went with its parse)
    body = len(chat(data_url(b"video bytes")))
    assert held_at_cancel == (len(b"video bytes") + body if stage == "decode" else 0), held_at_cancel
    assert held_after == 0 and fds == [], (held_after, fds)


# ---- memory: a file by reference, a data URL bounded, what is held counted, nothing kept after a refusal ---------
def media_config(root: Path) -> tuple[int, bytes]:
    return 200, json.dumps({"parameters": {MEDIA_ROOTS: {"string_value": json.dumps([str(root)])}}}).encode()


def test_a_file_goes_to_tritonserver_by_reference_and_is_never_read_here(tmp_path: Path,
                                                                          budgets: list[bounds.ByteBudget]) -> None:
    """A `file://` video far over the front's request bound (a long video, what `file://` is for) is answered: the
    grounding request names it (VIDEO_URI, its real path) and asks for the frames, a few hundred bytes; the front
    never opens more than to check it, and holds nothing of it."""
    long = tmp_path / "long.mp4"
    with open(long, "wb") as f:
        f.truncate(256 << 20)  # sparse: 256 MiB that take no disk
    triton = Triton(media_config(tmp_path))
    request = chat(f"file://{tmp_path}/./long.mp4")

    async def run() -> tuple[int, Any]:
        async with endpoint(triton.handle, max_request_bytes=1 << 20) as (port, _):
            return answered(await exchange(port, post_head(len(request)) + request))

    code, body = asyncio.run(run())
    assert code == 200 and body["videoitg"]["frames"] == [25], body
    (names,) = triton.inputs
    assert "VIDEO_URI" in names and "FRAMES" in names and "VIDEO" not in names, names
    assert triton.sizes[0] < 4096 and budgets[-1].high < 4 * len(request), (triton.sizes, budgets[-1].high)


def test_a_data_url_over_the_video_bound_is_refused_from_its_length(budgets: list[bounds.ByteBudget]) -> None:
    """The served model takes videos of at most max_video_bytes as bytes: a data URL holding more is refused from
    its length, nothing decoded and nothing sent to tritonserver."""
    triton = Triton()
    request = chat(data_url(os.urandom((1 << 20) + 1)))

    async def run() -> tuple[int, Any]:
        async with endpoint(triton.handle, max_request_bytes=4 << 20, max_video_bytes=1 << 20) as (port, _):
            return answered(await exchange(port, post_head(len(request)) + request))

    code, body = asyncio.run(run())
    assert code == 400 and body["error"]["code"] == "video_refused", body
    assert f"video of {(1 << 20) + 1} bytes, over this server's bound of {1 << 20} bytes" in body["error"]["message"]
    assert "file://" in body["error"]["message"] and triton.inputs == []
    assert budgets[-1].high <= PARSE_HOLD * len(request) + 4096, budgets[-1].high  # the body, its parse; no video


def raw_exchange(port: int, data: bytes) -> bytes:
    """`data` sent from a plain socket (in a thread: the bytes are sent from where they lie, no copy), the answer
    read until the front closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        got = b""
        while piece := sock.recv(1 << 16):
            got += piece
    return got


def test_what_a_data_url_request_holds_stays_within_what_the_budget_counts(budgets: list[bounds.ByteBudget]) -> None:
    """Every copy the request makes (the body, its parse, the decoded video, the grounding request sent from it)
    is in the budget while it exists: the memory this process allocated at its peak (traced, garbage collection
    off) is within the most the budget counted, plus the port's buffers; and all of it goes once answered."""
    request = chat(data_url(os.urandom(8 << 20)))
    data = post_head(len(request)) + request
    got: dict[str, int] = {}

    async def run() -> bytes:
        async with endpoint(Triton().handle, max_request_bytes=32 << 20) as (port, _):
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            answer = await asyncio.to_thread(raw_exchange, port, data)
            now, peak = tracemalloc.get_traced_memory()
            got.update(peak=peak - base, after=now - base)
            return answer

    answer = without_gc(run())
    assert answered(answer)[0] == 200, answer[:300]
    high = budgets[-1].high
    assert high <= PARSE_HOLD * len(request) + 4096, high
    assert got["peak"] <= high + (3 << 20), (got, high, len(request))  # buffers: reads, a slice sent, the answer
    assert got["after"] < 1 << 20 and budgets[-1].held == 0, got


def test_refused_videos_leave_nothing_referenced(budgets: list[bounds.ByteBudget]) -> None:
    """Videos refused by tritonserver, or malformed, keep nothing alive once answered (garbage collection off: a
    reference cycle through an error's traceback would keep each video until a collection)."""
    video = os.urandom(4 << 20)
    refused, malformed = chat(data_url(video)), chat(data_url(video)[:-8] + "*" * 8)

    async def run() -> tuple[list[int], int]:
        codes = []
        async with endpoint(Triton(refuse="VIDEO: over the 1048576 byte limit").handle,
                            max_request_bytes=16 << 20) as (port, _):
            await exchange(port, post_head(len(refused)) + refused)  # warm: the pooled connections, the imports
            base = tracemalloc.get_traced_memory()[0]
            for request in (refused, malformed) * 3:
                data = post_head(len(request)) + request
                codes.append(answered(await asyncio.to_thread(raw_exchange, port, data))[0])
                data = b""
            await asyncio.sleep(0.2)  # at rest: the worker thread lets go of the bytes it sent
            return codes, tracemalloc.get_traced_memory()[0] - base

    codes, at_rest = without_gc(run())
    assert codes == [400] * 6, codes
    assert at_rest < len(video) // 2 and budgets[-1].held == 0, at_rest


# ---- the video-LLM: credentials, misbehaving bytes, statuses; the client's text; unforeseen failures ------------
def test_the_upstream_urls_credentials_reach_no_client() -> None:
    """`--answer-upstream http://ops:s3cret@host/v1`: the video-LLM is sent basic authentication, the client's own
    Authorization is not (the URL's credentials win), and no answer or metric shows them, even where the video-LLM
    quotes them back."""
    token = base64.b64encode(b"ops:s3cret").decode()

    async def llm(r: web.Request) -> web.Response:
        await r.read()
        auth = r.headers.get("Authorization")
        if r.path.endswith("/models"):
            return web.json_response({"data": [{"id": "m"}]} if auth == f"Basic {token}" else {"data": []})
        return web.json_response({"error": {"message": f"key {auth} (ops:s3cret) refused"}}, status=401)

    async def run() -> tuple[bytes, bytes, str]:
        async with endpoint(Triton().handle, llm, userinfo="ops:s3cret@") as (port, counters):
            request = chat(data_url(b"video bytes"))
            refused = await exchange(port, post_head(len(request)).replace(b"Host: x", b"Host: x\r\nAuthorization: "
                                                                           b"Bearer client") + request)
            listed = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer client\r\n"
                                          b"Connection: close\r\n\r\n")
            return refused, listed, counters.text()

    refused, listed, metrics = asyncio.run(run())
    code, body = answered(refused)
    assert code == 401 and body["error"]["code"] == "upstream_refused", body
    assert "key Basic *** (***) refused" in body["error"]["message"], body
    assert answered(listed) == (200, {"data": [{"id": "m"}]}), listed[:300]
    for text in (refused, listed, metrics.encode()):
        assert b"s3cret" not in text and token.encode() not in text and b"ops" not in text, text[:400]


def strict(raw: bytes) -> Any:
    """JSON as the answer must be: no NaN or Infinity."""
    return json.loads(raw, parse_constant=lambda c: pytest.fail(f"{c} in an answer"))


@pytest.mark.parametrize(("upstream_status", "payload", "code", "answered_status", "message"), [
    (200, b'{"choices": ' + b"[" * 70 + b"]" * 70 + b"}", "upstream_unavailable", 502, "nests more than 64 levels"),
    (200, b'{"choices": [], "x": ' + b"[" * 100_000 + b"}", "upstream_unavailable", 502, "more than 65536"),
    (200, b'{"choices": [], "logprob": NaN}', "upstream_unavailable", 502, "not valid JSON"),
    (200, b'{"choices": [], "logprob": 1e400}', "upstream_unavailable", 502, "number out of range"),
    (400, b'{"error": {"message": null}}', "upstream_refused", 400, 'answered 400: {"message": null}'),
    (500, b'{"error": ' + b"[" * 100_000 + b"}", "upstream_refused", 500, "answered 500: {"),
    (600, b'{"choices": []}', "upstream_unavailable", 502, "answered status 600"),
    (302, b'{"choices": []}', "upstream_unavailable", 502, "answered status 302"),
], ids=["deep", "many-items", "nan", "overflow", "null-message", "deep-error", "status-600", "redirect"])
def test_the_video_llms_misbehaviour_is_answered_typed_and_counted(upstream_status: int, payload: bytes, code: str,
                                                                   answered_status: int, message: str) -> None:
    async def llm(r: web.Request) -> web.Response:
        await r.read()
        return web.Response(status=upstream_status, body=payload, content_type="application/json",
                            headers={"Location": "http://elsewhere/v1"} if upstream_status == 302 else None)

    async def run() -> tuple[bytes, dict[tuple[str, int], int]]:
        async with endpoint(Triton().handle, llm) as (port, counters):
            request = chat(data_url(b"video bytes"))
            return await exchange(port, post_head(len(request)) + request), dict(counters.answers)

    raw, counted = asyncio.run(run())
    assert status(raw) == answered_status, raw[:300]
    err = strict(raw.split(b"\r\n\r\n", 1)[1])["error"]
    assert err["code"] == code and message in err["message"] and len(err["message"]) < 1200, err
    assert counted == {(code, answered_status): 1}, counted


def test_a_model_list_that_is_not_json_within_bounds_is_a_typed_502() -> None:
    async def llm(r: web.Request) -> web.Response:
        return web.Response(body=b'{"data": ' + b"[" * 70 + b"]" * 70 + b"}", content_type="application/json")

    async def run() -> tuple[bytes, dict[tuple[str, int], int]]:
        async with endpoint(Triton().handle, llm) as (port, counters):
            raw = await exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return raw, dict(counters.answers)

    raw, counted = asyncio.run(run())
    code, body = answered(raw)
    assert code == 502 and body["error"]["code"] == "upstream_unavailable", body
    assert counted == {("upstream_unavailable", 502): 1}


@pytest.mark.parametrize("first", [b"data: " + b"[" * 70 + b"]" * 70, b"data: {\"id\": NaN}", b'data: {"id": "c1"'],
                         ids=["deep", "nan", "cut"])
def test_a_stream_the_video_llm_breaks_ends_with_an_error_event(first: bytes) -> None:
    """Its first event nested too deep, not JSON, or cut by the end of the stream: the client's stream ends with an
    event `{"error": ...}`, counted; nothing that is not JSON reaches it."""
    async def llm(r: web.Request) -> web.StreamResponse:
        await r.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(r)
        await response.write(first + (b"\n\n" if not first.endswith(b'"c1"') else b""))
        return response

    async def run() -> tuple[bytes, dict[tuple[str, int], int]]:
        async with endpoint(Triton().handle, llm) as (port, counters):
            request = chat(data_url(b"video bytes"), stream=True)
            return await exchange(port, post_head(len(request)) + request), dict(counters.answers)

    raw, counted = asyncio.run(run())
    head, _, events = raw.partition(b"\r\n\r\n")
    assert status(raw) == 200 and b"text/event-stream" in head, raw[:300]
    data = [line[6:] for line in events.split(b"\n") if line.startswith(b"data: ")]
    assert len(data) == 1 and strict(data[0])["error"]["code"] == "upstream_unavailable", events[-400:]
    assert counted == {("upstream_unavailable", 502): 1}, counted


def test_text_that_cannot_be_encoded_is_a_400_naming_its_field() -> None:
    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(b"video bytes")}},
        {"type": "text", "text": "when does the dog jump? \ud800"}]}]}).encode()

    async def run() -> tuple[bytes, dict[tuple[str, int], int]]:
        async with endpoint(Triton().handle) as (port, counters):
            return await exchange(port, post_head(len(request)) + request), dict(counters.answers)

    raw, counted = asyncio.run(run())
    code, body = answered(raw)
    assert code == 400 and body["error"]["code"] == "invalid_request", body
    assert "messages[0].content[1].text holds text that cannot be encoded" in body["error"]["message"], body
    assert counted == {("invalid_request", 400): 1}


def test_an_unforeseen_failure_is_answered_in_the_openai_shape_and_counted() -> None:
    """Scores tritonserver answered as NaN cannot be written as JSON: not a case the endpoint names, so it is a 500
    `internal_error` (counted; its traceback in the server's log), never NaN to the client nor aiohttp's text."""
    nan = GroundingResult([float("nan")] * 3, [0, 25, 50], [0.0, 1.0, 2.0], duration=3.0)

    async def run() -> tuple[bytes, dict[tuple[str, int], int]]:
        async with endpoint(Triton(result=nan).handle) as (port, counters):
            request = chat(data_url(b"video bytes"))
            return await exchange(port, post_head(len(request)) + request), dict(counters.answers)

    raw, counted = asyncio.run(run())
    assert status(raw) == 500, raw[:300]
    err = strict(raw.split(b"\r\n\r\n", 1)[1])["error"]
    assert err["code"] == "internal_error" and err["type"] == "server_error" and "ValueError" in err["message"], err
    assert counted == {("internal_error", 500): 1}


# ---- a client gone, what the HTTP parser refuses ----------------------------------------------------------------
def test_a_client_that_leaves_a_stalled_stream_closes_the_video_llms_connection_within_a_second() -> None:
    """The video-LLM sent its first event and stalls: the client leaves, and the front closes its connection to the
    video-LLM within a second, not at --answer-timeout."""
    request = chat(data_url(b"video bytes"), stream=True)

    async def run() -> float:
        closed = asyncio.Event()

        async def llm(r: web.Request) -> web.StreamResponse:
            await r.read()
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await response.prepare(r)
            await response.write(b'data: {"id": "c1", "choices": []}\n\n')
            await until_closed(r, closed, 30.0)  # stalled: nothing more for 30 s
            return response

        async with endpoint(Triton().handle, llm) as (port, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(post_head(len(request)) + request)
            got = b""
            while b"videoitg" not in got:
                got += await asyncio.wait_for(reader.read(1 << 16), 20)
            writer.close()
            t0 = time.monotonic()
            await asyncio.wait_for(closed.wait(), 5)
            return time.monotonic() - t0

    assert asyncio.run(run()) < 1.0


@pytest.mark.parametrize(("path", "openai"), [("/v1/chat/completions", True), ("/v2/models/videoitg/infer", False)])
def test_what_the_http_parser_refuses_is_answered_in_the_routes_shape(path: str, openai: bool) -> None:
    """A malformed chunked body (with the headers, or after them), a header over aiohttp's bound, a control byte in
    a header: JSON in the route's error shape (OpenAI's on the answer endpoint), the parser's complaint named, none
    of the client's bytes quoted back; counted."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode()
    cases = {"chunk": [head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n" + b"Z" * 15000 + b"\r\n"],
             "chunk-later": [head + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b"Z" * 15000 + b"\r\n"],
             "long-header": [head + b"X-Long: " + b"a" * 15000 + b"\r\n\r\n"],
             "control-byte": [head + b"X-\x01Bad: " + b"b" * 8000 + b"\r\n\r\n"]}

    async def send(port: int, pieces: list[bytes]) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.2)
        try:
            return await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()

    async def run() -> tuple[dict[str, bytes], dict[tuple[str, str], int]]:
        async with endpoint(Triton().handle, body_idle_s=30) as (port, counters):
            return {name: await send(port, pieces) for name, pieces in cases.items()}, dict(counters.rejected)

    answers, rejected = asyncio.run(run())
    for name, raw in answers.items():
        head_, _, body = raw.partition(b"\r\n\r\n")
        assert raw.split(b" ", 2)[1] == b"400" and b"application/json" in head_ and len(body) < 400, (name, raw[:400])
        assert b"ZZZ" not in body and b"aaa" not in body and b"bbb" not in body, (name, body)
        err = json.loads(body)["error"]
        message = err["message"] if openai else err
        assert ("chunk" in message or "malformed" in message or "bytes" in message or "token" in message), message
        if openai:
            assert err["type"] == "invalid_request_error" and err["code"] in ("syntax", "framing"), (name, err)
    assert sum(n for (protocol, _), n in rejected.items() if protocol == "http") == len(cases), rejected
