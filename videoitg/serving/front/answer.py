"""The answer endpoint on the front's HTTP port (`videoitg serve --answer-upstream URL`): `POST /v1/chat/completions`
takes an OpenAI chat request whose last user message holds a video, has tritonserver's `videoitg` model pick the
frames for the question (one KServe v2 inference request over the port's own connection to it, asking for the
top-K frames as JPEGs), and passes the request on to the video-LLM with the video replaced by those frames;
`GET /v1/models` passes the video-LLM's model list on. The policy is `videoitg.answer`; here, its transport: the
body read under the port's bounds and budget, the steps that touch bytes of a video off the event loop, the answer
relayed as it arrives, a client that leaves cancelling it. docs/answer.md."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from aiohttp import web

from videoitg.answer import (
    PATHS,
    AnswerError,
    ChatQuestion,
    Selection,
    SelectionError,
    forwarded_bytes,
    load_body,
    open_video,
    parse_chat,
    read_opened,
    refusal_body,
    selection_of,
    video_source,
    with_selection,
)
from videoitg.errors import InputError
from videoitg.paths import MediaRoots
from videoitg.serving.chat_upstream import ChatUpstream, selection_stream
from videoitg.serving.client import http_request_body, http_served_result
from videoitg.serving.front.bounds import ABANDONED, OVER_BUDGET, BodyReader
from videoitg.serving.front.config import FrontConfig
from videoitg.serving.front.http import HttpPort, Route, _continue
from videoitg.serving.front.policy import Reason, Refusal, encoding_error
from videoitg.serving.front.upstream import UpstreamError
from videoitg.serving.protocol import TOP

GONE_POLL_S = 0.25  # how often a request waiting on the video-LLM looks whether its client is still there


def answer_routes(cfg: FrontConfig) -> dict[str, Route]:
    """The HTTP port's routes of the answer endpoint (none when `cfg.answer_upstream` is unset)."""
    if not cfg.answer_upstream:
        return {}
    endpoint = AnswerEndpoint(cfg)
    return {PATHS[0]: endpoint.chat, PATHS[1]: endpoint.models}


class AnswerEndpoint:
    """The two routes, the video-LLM they call, and the media roots of the served model (read once from its
    `media_roots` parameter, as a client reads them: the directories the operator allowed with --media-root)."""

    def __init__(self, cfg: FrontConfig):
        assert cfg.answer_upstream is not None
        self.cfg = cfg
        self.upstream = ChatUpstream(cfg.answer_upstream, timeout_s=cfg.answer_timeout_s)
        self.roots: MediaRoots | None = None

    async def media_roots(self, port: HttpPort) -> MediaRoots:
        """The served model's media roots; none while tritonserver does not say (asked again next time)."""
        if self.roots is not None:
            return self.roots
        try:
            answer = await port.triton.request("GET", f"/v2/models/{TOP}/config", {}, None, self.cfg.pass_timeout_s)
            params = json.loads(answer.body).get("parameters") or {} if answer.status == 200 else None
        except (UpstreamError, OSError, asyncio.TimeoutError, ValueError):
            params = None
        if params is None:
            return MediaRoots()
        self.roots = MediaRoots.from_parameter((params.get("media_roots") or {}).get("string_value"))
        return self.roots

    # ---- the routes ----------------------------------------------------------------------------------------------
    async def models(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "GET":
            return self._refused(port, Refusal(f"{request.method[:16]} {request.path} is not served (GET only)",
                                               Reason.ROUTE))
        try:
            listed = await self._until_gone(port, request, self.upstream.models(_passed(request)))
        except AnswerError as e:
            return self._failed(port, e)
        return web.json_response(listed)

    async def chat(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST":
            return self._refused(port, Refusal(f"{request.method[:16]} {request.path} is not served (POST only)",
                                               Reason.ROUTE))
        cfg = self.cfg
        if (err := encoding_error(request.headers.get("Content-Encoding", "").strip().lower() or None)) is not None:
            return self._refused(port, err)
        declared = request.content_length
        if declared is not None and declared > cfg.max_request_bytes:
            return self._refused(port, Refusal(f"request body of {declared} bytes is over the server's limit of "
                                               f"{cfg.max_request_bytes} bytes", Reason.TOO_LARGE))
        if (err := await _continue(request)) is not None:
            return self._refused(port, err)
        reader = BodyReader(request.content, cfg.max_request_bytes, port.budget, cfg.body_idle_s)
        port.conns.reading[request.protocol] = request.content
        taken = 0  # bytes of a video read from a file, held in the budget beside the body
        try:
            if request.protocol in port.conns.shut and not request.content.is_eof():
                return self._refused(port, Refusal(ABANDONED, Reason.ABANDONED))
            chunks = []
            while chunk := await reader.chunk():
                chunks.append(chunk)
            port.conns.reading.pop(request.protocol, None)
            if reader.refusal is not None:
                chunks.clear()
                return self._refused(port, reader.refusal)
            raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            roots = await self.media_roots(port)
            t0 = time.perf_counter()
            q, source = await asyncio.to_thread(self._parse, raw, roots)
            del raw
            if isinstance(source, Path):  # read here, its bytes held in the budget beside the body's
                fd, size = await asyncio.to_thread(open_video, source, roots, cfg.max_request_bytes)
                if not port.budget.take(size):
                    os.close(fd)
                    return self._refused(port, Refusal(OVER_BUDGET, Reason.OVERLOADED))
                taken = size
                source = await asyncio.to_thread(read_opened, fd, size)
            selection = await self._until_gone(port, request, self._select(port, q, source, t0))
            del source
            return await self._answer(port, request, q, selection)
        except AnswerError as e:
            return self._failed(port, e)
        finally:
            port.conns.reading.pop(request.protocol, None)
            reader.release()
            port.budget.give(taken)

    # ---- the steps -----------------------------------------------------------------------------------------------
    @staticmethod
    def _parse(raw: bytes, roots: MediaRoots) -> tuple[ChatQuestion, bytes | Path]:
        """The checked request and its video (bytes of a data URL, or a path under the media roots): off the event
        loop, as a body of tens of MiB takes a while to parse and decode."""
        q = parse_chat(load_body(raw))
        return q, video_source(q.video_url, roots)

    async def _select(self, port: HttpPort, q: ChatQuestion, video: bytes, t0: float) -> Selection:
        """The frames tritonserver's `videoitg` model picks for the question: one inference request, as any client
        would send it, through the port's connection (its limits, cache, ranking rule and metrics apply). `t0`: when
        the request's video began to be read (its `select_s` counts from there)."""
        body, headers = await asyncio.to_thread(http_request_body, video, q.question, q.top_k, "jpeg", q.frame_size)
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
        body = await asyncio.to_thread(forwarded_bytes, q, selection, self.cfg.answer_model)
        stream = q.body.get("stream") is True
        headers = _passed(request)
        up = self.upstream
        if not stream:
            async def plain() -> dict[str, Any]:
                async with up.request("POST", "/chat/completions", body, headers) as resp:
                    return await up.read_json(resp)

            return web.json_response(with_selection(await self._until_gone(port, request, plain()), selection))
        async with up.request("POST", "/chat/completions", body, headers, stream=True) as resp:
            if not resp.content_type.startswith("text/event-stream"):  # an upstream that answered in one piece
                return web.json_response(with_selection(await up.read_json(resp), selection))
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
        nobody is answered). Unlike the KServe route, which still answers a client that half-closed after its
        request, a shut side here counts as gone: chat clients never half-close, and a video-LLM's answer is
        expensive to finish for nobody."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=GONE_POLL_S)
            if done:
                return task.result()
            if request.transport is None or request.transport.is_closing() or request.protocol in port.conns.shut:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                raise asyncio.CancelledError("the client closed the connection")

    # ---- answers that are not the video-LLM's ---------------------------------------------------------------------
    def _refused(self, port: HttpPort, err: Refusal) -> web.Response:
        """A refusal of the front's own (route, body bounds, budget), counted as the port counts it, in the OpenAI
        error shape."""
        port.counters.reject("http", err)
        status = err.reason.http
        r = web.json_response(refusal_body(str(err), err.reason.label or err.reason.name.lower()), status=status,
                              headers={"Retry-After": "1"} if status == 503 else None)
        r.force_close()
        return r

    def _failed(self, port: HttpPort, err: AnswerError) -> web.Response:
        port.counters.answer_failed(err.code, err.status)
        return web.json_response(err.body(), status=err.status)


def _passed(request: web.BaseRequest) -> dict[str, str]:
    return {k: request.headers[k] for k in ("Authorization",) if k in request.headers}


def _triton_error(body: bytes) -> str:
    try:
        text = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        text = body[:1024].decode("utf-8", "replace")
    return str(text)[:1024]
