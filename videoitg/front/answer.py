"""The answer endpoint on the front's HTTP port (`videoitg serve --answer-upstream URL`): `POST /v1/chat/completions`
takes an OpenAI chat request whose last user message holds a video, has tritonserver's `videoitg` model pick the
frames for the question (one KServe v2 inference request over the port's own connection to it, asking for the
top-K frames as JPEGs; a `file://` video named by reference, VIDEO_URI, never read here), and passes the request on
to the video-LLM with the video replaced by those frames; `GET /v1/models` passes the video-LLM's model list on. The
policy is `videoitg.answer.chat`; here, its transport: the body read under the port's bounds and every copy of it
held in its budget, given back once the frames are picked; the steps that touch bytes of a video in worker threads;
the answer relayed as it arrives, the client watched throughout; every error, foreseen or not, answered in the
OpenAI shape and counted. docs/answer.md."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web

from videoitg.answer.chat import (
    PATHS,
    ChatQuestion,
    DataVideo,
    Selection,
    check_file,
    forwarded_bytes,
    load_body,
    names_a_file,
    parse_chat,
    selection_of,
    video_source,
    with_selection,
    without_video,
)
from videoitg.answer.errors import AnswerError, InternalError, OverloadedError, SelectionError, refusal_body
from videoitg.answer.relay import strict_json
from videoitg.answer.videollm import ChatUpstream, selection_stream
from videoitg.client.kserve import http_request_body, http_served_result
from videoitg.contract.parameters import MEDIA_ROOTS
from videoitg.contract.protocol import OTHER_INPUTS_BYTES, TOP
from videoitg.errors import InputError
from videoitg.front.bounds import OVER_BUDGET, BodyReader, ByteBudget
from videoitg.front.config import FrontConfig
from videoitg.front.http import Closer, HttpPort, Route, _continue, refused
from videoitg.front.lost import ModelLost, error_text, while_away
from videoitg.front.policy import Reason, Refusal, bounded_error_body, encoding_error
from videoitg.front.tritonserver import UpstreamError
from videoitg.paths import MediaRoots

GONE_POLL_S = 0.25  # how often a request waiting on the video-LLM looks whether its client is still there
SEND_SLICE = 1 << 20  # bytes of a video written to tritonserver at once (what the socket does not take is copied)
log = logging.getLogger("videoitg.front")


def answer_routes(cfg: FrontConfig, callers_key_passes: bool = True) -> tuple[dict[str, Route], list[Closer]]:
    """The HTTP port's routes of the answer endpoint and what closes its connections to the video-LLM (`HttpPort`'s
    `routes` and `closers`); none when `cfg.answer_upstream` is unset. `callers_key_passes` off (the server has API
    keys): a caller's Authorization is never sent to the video-LLM."""
    if not cfg.answer_upstream:
        return {}, []
    endpoint = AnswerEndpoint(cfg, callers_key_passes)
    return {PATHS[0]: endpoint.chat, PATHS[1]: endpoint.models}, [endpoint.upstream.close]


class AnswerEndpoint:
    """The two routes, the video-LLM they call, and the media roots of the served model (read once from its
    `media_roots` parameter, as a client reads them: the directories the operator allowed with --media-root)."""

    def __init__(self, cfg: FrontConfig, callers_key_passes: bool = True):
        assert cfg.answer_upstream is not None
        self.cfg = cfg
        # The largest video a data URL may hold: the served model's upload bound (tritonserver refuses more); and
        # the largest body, that video's data URL and the other inputs' share (a longer video goes by file://).
        self.video_bytes = cfg.max_video_bytes or cfg.max_request_bytes
        self.max_body = min(cfg.max_request_bytes, -(-self.video_bytes * 4 // 3) + OTHER_INPUTS_BYTES)
        # The video-LLM's answers are bounded as a client's body is.
        self.upstream = ChatUpstream(cfg.answer_upstream, timeout_s=cfg.answer_timeout_s, max_bytes=self.max_body,
                                     key_file=cfg.answer_api_key_file, callers_key_passes=callers_key_passes)
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
            raise SelectionError(f"the grounding server (tritonserver) did not answer ({type(e).__name__}); try again",
                                 503) from None
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
        return await self._answered(port, self._models(port, request))

    async def chat(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        """Read and check the request, have the frames picked, then ask the video-LLM (`_chat`)."""
        if request.method != "POST":
            return self._refused(port, Refusal(f"{request.method[:16]} {request.path} is not served (POST only)",
                                               Reason.ROUTE))
        return await self._answered(port, self._chat(port, request))

    async def _answered(self, port: HttpPort, work: Awaitable[web.StreamResponse]) -> web.StreamResponse:
        """`work`'s answer; an error it raises answered in the OpenAI shape and counted: the endpoint's own
        (`AnswerError`), the budget's (a refusal, as the port counts it), or one nobody foresaw (500
        `internal_error`, its traceback in the server's log, never in the answer). The error keeps no frame alive
        (one may hold a request's video) once it is answered."""
        try:
            return await work
        except OverloadedError as e:
            _forget(e)
            return self._refused(port, Refusal(str(e), Reason.OVERLOADED))
        except AnswerError as e:
            _forget(e)
            return self._failed(port, e)
        except Exception as e:
            log.error("answer endpoint: unexpected %s", type(e).__name__, exc_info=e)
            _forget(e)
            return self._failed(port, InternalError(f"the answer endpoint failed unexpectedly ({type(e).__name__}); "
                                                    "the server's log has the details"))

    async def _models(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        listed = await self._until_gone(port, request, self.upstream.models(request.headers, port.budget))
        return _json(listed)

    async def _chat(self, port: HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        """The body, its copies and the video are given back once the frames are picked: while the video-LLM
        answers, the request holds its question and the frames."""
        if (err := encoding_error(request.headers.get("Content-Encoding", "").strip().lower() or None)) is not None:
            return self._refused(port, err)
        declared = request.content_length
        if declared is not None and declared > self.max_body:
            return self._refused(port, Refusal(self._too_large(declared), Reason.TOO_LARGE))
        if (err := await _continue(request)) is not None:
            return self._refused(port, err)
        async with port.reading(request, self.max_body) as reader:
            body = bytearray()  # one buffer, so the chunks leave no holes in the heap once copied
            while chunk := await reader.chunk():
                body += chunk
            chunks = [body]
            del body, chunk
            if reader.refusal is not None:
                chunks.clear()
                too_large = reader.refusal.reason is Reason.TOO_LARGE
                return self._refused(port, Refusal(self._too_large(None), Reason.TOO_LARGE) if too_large else
                                     reader.refusal)
            picked = await self._pick(port, request, chunks, _Held.adopted(port.budget, reader))
        return await self._answer(port, request, *picked)

    # ---- the steps -----------------------------------------------------------------------------------------------
    async def _pick(self, port: HttpPort, request: web.BaseRequest, chunks: list[bytearray],
                    body: _Held) -> tuple[ChatQuestion, Selection]:
        """The checked request, without its video, and the frames picked for it. Held in the budget beside the
        body's bytes (`body`, given back as soon as its text is gone): the copies its parse makes (`load_json`),
        then a data URL's video once decoded; a file is named to tritonserver by reference and never read here.
        OverloadedError when the budget has no room."""
        t0 = time.perf_counter()  # `select_s` counts from here: the request's video begins to be read
        with body:
            q, source = await _in_thread(self._parse, chunks, port.budget, held=(body,))
            if isinstance(source, str):  # a file: checked here, read by tritonserver
                body.release()
                roots = await self.media_roots(port)
                path = await _in_thread(_checked, source, roots)
                return q, await self._until_gone(port, request, self._select(port, q, path, t0))
            with _Held(port.budget, source.size) as decoded:
                video = await _in_thread(source.decode, held=(body, decoded))
                source = None  # the data URL, the body's text: the last of the body
                body.release()
                try:
                    return q, await self._until_gone(port, request, self._select(port, q, video, t0))
                finally:
                    video = None

    def _parse(self, chunks: list[bytearray], budget: ByteBudget) -> tuple[ChatQuestion, DataVideo | str]:
        """The checked request without its video (`without_video`), and its video: a data URL, its size checked
        (not decoded yet), or the URL of a file (resolved once the media roots are known). In a worker thread: a
        body of tens of MiB takes a while to parse (`load_body`, its copies held in `budget`)."""
        q = parse_chat(load_body(chunks, budget))
        source = q.video_url if names_a_file(q.video_url) else video_source(q.video_url, None, self.video_bytes)
        assert not isinstance(source, Path)
        return without_video(q), source

    async def _select(self, port: HttpPort, q: ChatQuestion, video: bytearray | Path, t0: float) -> Selection:
        """The frames tritonserver's `videoitg` model picks for the question: one inference request, as any client
        would send it, through the port's connection (its limits, cache, ranking rule and metrics apply); a file
        named by its path (VIDEO_URI), a data URL's bytes sent without a copy. `t0`: when the request's video began
        to be read (its `select_s` counts from there)."""
        if isinstance(video, Path):
            pieces, headers = http_request_body(None, q.question, q.options, uri=str(video))
        else:
            pieces, headers = http_request_body(video, q.question, q.options)
        headers = {**self.cfg.keyed(headers), "Content-Length": str(sum(map(len, pieces)))}
        try:
            answer = await port.triton.request("POST", f"/v2/models/{TOP}/infer", headers, _sliced(pieces),
                                               self.cfg.infer_timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError) as e:
            port.counters.unavailable["http"] += 1
            if isinstance(e, ModelLost):  # the model's process died with it: its own words, send it again
                raise SelectionError(str(e), 503) from None
            raise SelectionError(f"the grounding server (tritonserver) did not answer ({type(e).__name__}); try again",
                                 503) from None
        finally:
            del pieces, video
        if answer.status != 200:
            status = answer.status if answer.status < 500 or answer.status == 503 else 502
            text = _triton_error(answer.body)
            if away := while_away(TOP, text):
                status, text = 503, away
            raise SelectionError(f"frame selection refused: {text}", status)
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
        # held while the video-LLM answers: the bytes sent, and the request they were built from (messages, frames)
        with _Held(port.budget, 2 * len(body)):
            return await self._answered_by(port, request, q, selection, body)

    async def _answered_by(self, port: HttpPort, request: web.BaseRequest, q: ChatQuestion, selection: Selection,
                           body: bytes) -> web.StreamResponse:
        """The video-LLM's answer to `body` (the forwarded request)."""
        headers = request.headers  # the video-LLM is sent PASS_HEADERS of them (answer/videollm.py)
        up = self.upstream
        if q.body.get("stream") is not True:
            return _json(await self._until_gone(port, request, up.complete(body, selection, headers, port.budget)))
        async with contextlib.AsyncExitStack() as opened:
            resp = await self._until_gone(port, request, opened.enter_async_context(
                up.request("POST", "/chat/completions", body, headers, stream=True)))
            if not resp.content_type.startswith("text/event-stream"):  # an upstream that answered in one piece
                answer = await self._until_gone(port, request, up.read_json(resp, port.budget))
                return _json(with_selection(answer, selection))
            out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
            await out.prepare(request)
            await self._until_gone(port, request, self._relay(port, out, resp, selection))
            return out

    async def _relay(self, port: HttpPort, out: web.StreamResponse, resp: Any, selection: Selection) -> None:
        """The video-LLM's stream written to the client event by event, checked (`selection_stream`). A stream that
        breaks, stalls past the answer timeout or sends what is not an event ends with an event `{"error": ...}`
        (counted), its connection to the video-LLM closed; a client gone ends it as a cancellation."""
        try:
            try:
                async for piece in selection_stream(self.upstream.chunks(resp), selection):
                    await out.write(piece)
            except AnswerError as e:
                err: AnswerError = e
            except ConnectionError:
                raise
            except Exception as e:
                log.error("answer endpoint: unexpected %s in a stream", type(e).__name__, exc_info=e)
                err = InternalError(f"the answer endpoint failed unexpectedly ({type(e).__name__}); the server's "
                                    "log has the details")
            else:
                await out.write_eof()
                return
            _forget(err)
            resp.close()  # what the video-LLM still sends is nobody's
            port.counters.answer_failed(err.code, err.status)
            await out.write(b"data: " + strict_json(err.body()) + b"\n\n")
            await out.write_eof()
        except ConnectionError:  # the client went while its answer was written
            raise asyncio.CancelledError("the client closed the connection") from None

    async def _until_gone(self, port: HttpPort, request: web.BaseRequest, work: Awaitable[Any]) -> Any:
        """`work`'s result; cancelled as soon as the client's connection closes, or the client ends its side (then
        nobody is answered), or this handler is cancelled: the client is looked at every GONE_POLL_S whatever
        `work` waits on (the video-LLM, tritonserver, the client's own socket). Unlike the KServe route, which still
        answers a client that half-closed after its request, a shut side here counts as gone: chat clients never
        half-close, and a video-LLM's answer is expensive to finish for nobody."""
        task, done = asyncio.ensure_future(work), set()
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
            del task, done  # a traceback through this frame keeps neither the task nor its error

    # ---- answers that are not the video-LLM's ---------------------------------------------------------------------
    def _too_large(self, n: int | None) -> str:
        size = f"of {n} bytes " if n is not None else ""
        return (f"request body {size}is over this endpoint's limit of {self.max_body} bytes (a video of the served "
                f"{self.video_bytes} byte bound as a data URL, and the rest): name a long video by file:// under one "
                "of the server's --media-root directories")

    def _refused(self, port: HttpPort, err: Refusal) -> web.Response:
        """A refusal of the front's own (route, body bounds, budget), counted as the port counts it, in the OpenAI
        error shape."""
        return refused(port.counters, "http", err, body=refusal_body(str(err), err.reason.label or
                                                                      err.reason.name.lower()))

    def _failed(self, port: HttpPort, err: AnswerError) -> web.Response:
        port.counters.answer_failed(err.code, err.status)
        return _json(err.body(), err.status, {"Retry-After": "1"} if err.status == 503 else None)


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """An answer of strict JSON (no NaN or Infinity: a ValueError instead, which `_answered` answers)."""
    return web.Response(body=strict_json(value), status=status, content_type="application/json", headers=headers)


class _Held:
    """`n` bytes taken from the budget for a block (OverloadedError when there is no room), given back at its end
    or at `release`; or, for a worker thread still running when its caller was cancelled (`detach`), once that
    thread ends."""

    def __init__(self, budget: ByteBudget, n: int):
        self.budget, self.n, self.taken = budget, n, False

    @classmethod
    def adopted(cls, budget: ByteBudget, reader: BodyReader) -> _Held:
        """The bytes a body's reader took, held from now on by the one returned (the reader's given back: none)."""
        held = cls(budget, reader.taken)
        held.taken, reader.taken = True, 0
        return held

    def __enter__(self) -> _Held:
        if not self.taken and not self.budget.take(self.n):
            self.n = 0
            raise OverloadedError(OVER_BUDGET)
        self.taken = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self.budget.give(self.n)
        self.n = 0

    def detach(self) -> Callable[[], None]:
        n, self.n = self.n, 0
        return lambda: self.budget.give(n)


async def _in_thread(fn: Callable[..., Any], *args: Any, held: Sequence[_Held] = ()) -> Any:
    """`fn(*args)` in a worker thread. A thread cannot be stopped: when the caller is cancelled first, `fn` runs on,
    and what `held` holds (what it works on) stays taken from the budget until it ends (its result, or its
    failure, is then nobody's)."""
    task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        late = [h.detach() for h in held]

        def ended(t: asyncio.Future) -> None:
            if not t.cancelled():
                t.exception()  # retrieved: nobody waits for it
            for give in late:
                give()
        task.add_done_callback(ended)
        raise


async def _sliced(pieces: Sequence[bytes | bytearray]) -> AsyncIterator[memoryview]:
    """A request body's pieces in slices of at most SEND_SLICE bytes, none copied: each written once the connection
    took the one before (`Upstream.request`)."""
    for piece in pieces:
        view = memoryview(piece)
        for at in range(0, len(view), SEND_SLICE):
            yield view[at:at + SEND_SLICE]


def _forget(e: BaseException) -> None:
    """The frames an answered error holds dropped, its own and those of the errors it chains: a frame can hold a
    request's video, which would otherwise stay until a garbage collection (a task keeps its error, the error its
    traceback, the traceback the frame that holds the task)."""
    stack, seen = [e], set()
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        x.__traceback__ = None
        stack += [c for c in (x.__context__, x.__cause__) if c is not None]


def _field(obj: Any, key: str, default: Any) -> Any:
    """`obj[key]` of a JSON object (`default` where it is absent or null); None when `obj` is no object."""
    if not isinstance(obj, dict):
        return None
    value = obj.get(key)
    return default if value is None else value


def _checked(url: str, roots: MediaRoots) -> Path:
    """The real path of the file a `video_url` names under the media roots, opened once with their checks
    (`video_source`, `check_file`)."""
    path = video_source(url, roots)
    assert isinstance(path, Path)
    check_file(path)
    return path


def _triton_error(body: bytes) -> str:
    """tritonserver's error text (its JSON `error`, else its body), cut as the KServe route cuts it."""
    return error_text(bounded_error_body(body))
