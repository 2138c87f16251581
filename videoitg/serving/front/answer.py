"""The answer endpoint on the front's HTTP port (`videoitg serve --answer-upstream URL`): `POST /v1/chat/completions`
takes an OpenAI chat request whose last user message holds a video, has tritonserver's `videoitg` model pick the
frames for the question (one KServe v2 inference request over the port's own connection to it, asking for the
top-K frames as JPEGs), and passes the request on to the video-LLM with the video replaced by those frames;
`GET /v1/models` passes the video-LLM's model list on. The policy is `videoitg.answer.chat`; here, its transport: the
body read under the port's bounds and budget (`HttpPort.reading`) and given back once the frames are picked, the
steps that touch bytes of a video in worker threads, the answer relayed as it arrives, a client that leaves
cancelling it. docs/answer.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from videoitg.answer.chat import (
    PATHS,
    AnswerError,
    ChatQuestion,
    Selection,
    SelectionError,
    forwarded_bytes,
    load_body,
    names_a_file,
    open_video,
    parse_chat,
    read_opened,
    refusal_body,
    selection_of,
    video_source,
    with_selection,
    without_video,
)
from videoitg.answer.upstream import ChatUpstream, selection_stream
from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.protocol import TOP
from videoitg.errors import InputError
from videoitg.paths import MediaRoots
from videoitg.serving.client import http_request_body, http_served_result
from videoitg.serving.front.bounds import OVER_BUDGET
from videoitg.serving.front.config import FrontConfig
from videoitg.serving.front.http import Closer, HttpPort, Route, _continue, refused
from videoitg.serving.front.policy import Reason, Refusal, bounded_error_body, encoding_error
from videoitg.serving.front.upstream import UpstreamError

GONE_POLL_S = 0.25  # how often a request waiting on the video-LLM looks whether its client is still there


def answer_routes(cfg: FrontConfig) -> tuple[dict[str, Route], list[Closer]]:
    """The HTTP port's routes of the answer endpoint and what closes its connections to the video-LLM (`HttpPort`'s
    `routes` and `closers`); none when `cfg.answer_upstream` is unset."""
    if not cfg.answer_upstream:
        return {}, []
    endpoint = AnswerEndpoint(cfg)
    return {PATHS[0]: endpoint.chat, PATHS[1]: endpoint.models}, [endpoint.upstream.close]


class AnswerEndpoint:
    """The two routes, the video-LLM they call, and the media roots of the served model (read once from its
    `media_roots` parameter, as a client reads them: the directories the operator allowed with --media-root)."""

    def __init__(self, cfg: FrontConfig):
        assert cfg.answer_upstream is not None
        self.cfg = cfg
        self.upstream = ChatUpstream(cfg.answer_upstream, timeout_s=cfg.answer_timeout_s)
        self.roots: MediaRoots | None = None

    async def media_roots(self, port: HttpPort) -> MediaRoots:
        """The served model's media roots, asked of tritonserver the first time a request names a file; a
        SelectionError when it does not answer (503) or answers something else than a model config (502)."""
        if self.roots is not None:
            return self.roots
        try:
            answer = await port.triton.request("GET", f"/v2/models/{TOP}/config", {}, None, self.cfg.pass_timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError) as e:
            port.counters.unavailable["http"] += 1
            raise SelectionError(f"the grounding server did not answer ({type(e).__name__}); try again", 503) from None
        if answer.status != 200:
            raise SelectionError(f"the grounding server did not give its media roots (its model config answered "
                                 f"{answer.status}: {_triton_error(answer.body)})", 502)
        try:
            config = json.loads(answer.body)
        except ValueError:
            config = None
        params = _field(config, "parameters", {})  # a model without parameters, or without this one: no roots
        value = _field(_field(params, MEDIA_ROOTS, {}), "string_value", "")
        if not isinstance(value, str):
            raise SelectionError(f"the grounding server's model config is malformed (no `parameters` object with a "
                                 f"string `{MEDIA_ROOTS}`)", 502)
        try:
            self.roots = MediaRoots.from_parameter(value)
        except InputError as e:
            raise SelectionError(f"the grounding server's model config is malformed ({e})", 502) from None
        return self.roots

    # ---- the routes ----------------------------------------------------------------------------------------------
    async def models(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "GET":
            return self._refused(port, Refusal(f"{request.method[:16]} {request.path} is not served (GET only)",
                                               Reason.ROUTE))
        try:
            listed = await self._until_gone(port, request, self.upstream.models(request.headers))
        except AnswerError as e:
            return self._failed(port, e)
        return web.json_response(listed)

    async def chat(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        """Read and check the request, have the frames picked, then ask the video-LLM. The body, the video and
        their share of the held-bytes budget are given back once the frames are picked: while the video-LLM
        answers, the request holds its question and the frames."""
        if request.method != "POST":
            return self._refused(port, Refusal(f"{request.method[:16]} {request.path} is not served (POST only)",
                                               Reason.ROUTE))
        if (err := encoding_error(request.headers.get("Content-Encoding", "").strip().lower() or None)) is not None:
            return self._refused(port, err)
        declared = request.content_length
        if declared is not None and declared > self.cfg.max_request_bytes:
            return self._refused(port, Refusal(f"request body of {declared} bytes is over the server's limit of "
                                               f"{self.cfg.max_request_bytes} bytes", Reason.TOO_LARGE))
        if (err := await _continue(request)) is not None:
            return self._refused(port, err)
        async with port.reading(request) as reader:
            chunks: list[bytes] = []
            while chunk := await reader.chunk():
                chunks.append(chunk)
            if reader.refusal is not None:
                chunks.clear()
                return self._refused(port, reader.refusal)
            try:
                picked = await self._pick(port, request, chunks)
            except AnswerError as e:
                return self._failed(port, e)
            if isinstance(picked, Refusal):
                return self._refused(port, picked)
        try:
            return await self._answer(port, request, *picked)
        except AnswerError as e:
            return self._failed(port, e)

    # ---- the steps -----------------------------------------------------------------------------------------------
    async def _pick(self, port: HttpPort, request: web.BaseRequest,
                    chunks: list[bytes]) -> tuple[ChatQuestion, Selection] | Refusal:
        """The checked request, without its video, and the frames picked for it; the Refusal of the budget when
        there is no room for a video read from a file."""
        t0 = time.perf_counter()  # `select_s` counts from here: the request's video begins to be read
        q, source = await asyncio.to_thread(self._parse, chunks)
        taken = 0  # bytes of a video read from a file, held in the budget beside the body's
        try:
            if isinstance(source, str):  # a file: read here, once the media roots are known
                roots = await self.media_roots(port)
                fd, size = await _finished(asyncio.to_thread(_open, source, roots, self.cfg.max_request_bytes),
                                           lambda opened: os.close(opened[0]))
                if not port.budget.take(size):
                    os.close(fd)
                    return Refusal(OVER_BUDGET, Reason.OVERLOADED)
                taken = size
                try:
                    source = await _finished(asyncio.to_thread(read_opened, fd, size),
                                             lambda _: port.budget.give(size), always=True)
                except asyncio.CancelledError:
                    taken = 0  # given back when the read ends
                    raise
            return q, await self._until_gone(port, request, self._select(port, q, source, t0))
        finally:
            del source
            port.budget.give(taken)

    @staticmethod
    def _parse(chunks: list[bytes]) -> tuple[ChatQuestion, bytes | str]:
        """The checked request without its video (`without_video`), and its video: the bytes of a data URL, or the
        URL of a file (read once the media roots are known). In a worker thread: a body of tens of MiB takes a while
        to parse and decode (`load_body`, `video_source`)."""
        q = parse_chat(load_body(chunks))
        source = q.video_url if names_a_file(q.video_url) else video_source(q.video_url, None)
        return without_video(q), source

    async def _select(self, port: HttpPort, q: ChatQuestion, video: bytes, t0: float) -> Selection:
        """The frames tritonserver's `videoitg` model picks for the question: one inference request, as any client
        would send it, through the port's connection (its limits, cache, ranking rule and metrics apply). `t0`: when
        the request's video began to be read (its `select_s` counts from there)."""
        body, headers = await asyncio.to_thread(http_request_body, video, q.question, q.options)
        try:
            answer = await port.triton.request("POST", f"/v2/models/{TOP}/infer", self.cfg.keyed(headers), body,
                                               self.cfg.infer_timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError) as e:
            e.__traceback__ = None  # it would hold the request's frames, and so the video
            port.counters.unavailable["http"] += 1
            raise SelectionError(f"the grounding server did not answer ({type(e).__name__}); try again", 503) from None
        finally:
            del body
        if answer.status != 200:
            status = answer.status if answer.status < 500 or answer.status == 503 else 502
            raise SelectionError(f"frame selection refused: {_triton_error(answer.body)}", status)
        try:
            served = await asyncio.to_thread(http_served_result, answer.body,
                                             answer.headers.get("inference-header-content-length"), q.question)
        except InputError as e:  # bytes that are not an inference answer
            raise SelectionError(str(e), 502) from None
        return selection_of(served.result, served.top_k_frames, served.frames or [], served.moments,
                            time.perf_counter() - t0)

    async def _answer(self, port: HttpPort, request: web.BaseRequest, q: ChatQuestion,
                      selection: Selection) -> web.StreamResponse:
        """The video-LLM's answer with the selection in it, plain or streamed as the request asks."""
        body = await asyncio.to_thread(forwarded_bytes, q, selection, self.cfg.answer_model)
        headers = request.headers  # the video-LLM is sent PASS_HEADERS of them (chat_upstream)
        up = self.upstream
        if q.body.get("stream") is not True:
            return web.json_response(await self._until_gone(port, request, up.complete(body, selection, headers)))
        async with contextlib.AsyncExitStack() as opened:
            resp = await self._until_gone(port, request, opened.enter_async_context(
                up.request("POST", "/chat/completions", body, headers, stream=True)))
            if not resp.content_type.startswith("text/event-stream"):  # an upstream that answered in one piece
                answer = await self._until_gone(port, request, up.read_json(resp))
                return web.json_response(with_selection(answer, selection))
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await out.prepare(request)
            try:
                async for piece in selection_stream(up.chunks(resp), selection):
                    await out.write(piece)  # a client gone raises here: the upstream's connection closes
            except AnswerError as e:  # broke off or stalled: the status is sent, the stream ends with an error event
                port.counters.answer_failed(e.code, e.status)
                await out.write(b"data: " + json.dumps(e.body()).encode() + b"\n\n")
            await out.write_eof()
            return out

    async def _until_gone(self, port: HttpPort, request: web.BaseRequest, work: Awaitable[Any]) -> Any:
        """`work`'s result; cancelled as soon as the client's connection closes, or the client ends its side (then
        nobody is answered), or this handler is cancelled. Unlike the KServe route, which still answers a client
        that half-closed after its request, a shut side here counts as gone: chat clients never half-close, and a
        video-LLM's answer is expensive to finish for nobody."""
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=GONE_POLL_S)
                if done:
                    return task.result()
                if request.transport is None or request.transport.is_closing() or request.protocol in port.conns.shut:
                    raise asyncio.CancelledError("the client closed the connection")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)

    # ---- answers that are not the video-LLM's ---------------------------------------------------------------------
    def _refused(self, port: HttpPort, err: Refusal) -> web.Response:
        """A refusal of the front's own (route, body bounds, budget), counted as the port counts it, in the OpenAI
        error shape."""
        return refused(port.counters, "http", err, body=refusal_body(str(err), err.reason.label or
                                                                      err.reason.name.lower()))

    def _failed(self, port: HttpPort, err: AnswerError) -> web.Response:
        port.counters.answer_failed(err.code, err.status)
        return web.json_response(err.body(), status=err.status)


async def _finished(work: Awaitable[Any], after_cancel: Callable[[Any], None], always: bool = False) -> Any:
    """`work`'s result. A worker thread cannot be stopped: when the caller is cancelled first, `work` runs on, and
    `after_cancel` gets its result once it ends (what it opened is closed); with `always`, also when it failed (what
    it holds is given back)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        def done(t: asyncio.Future) -> None:
            ok = not t.cancelled() and t.exception() is None
            if ok or always:
                after_cancel(t.result() if ok else None)
        task.add_done_callback(done)
        raise


def _field(obj: Any, key: str, default: Any) -> Any:
    """`obj[key]` of a JSON object (`default` where it is absent or null); None when `obj` is no object."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    return default if value is None else value


def _open(url: str, roots: MediaRoots, max_bytes: int) -> tuple[int, int]:
    """(descriptor, size) of the file a `video_url` names under the media roots (`video_source`, `open_video`)."""
    path = video_source(url, roots)
    assert isinstance(path, Path)
    return open_video(path, max_bytes)


def _triton_error(body: bytes) -> str:
    """tritonserver's error text (its JSON `error`, else its body), cut as the KServe route cuts it."""
    body = bounded_error_body(body)
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")
