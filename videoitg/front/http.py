"""The front's HTTP ports, on aiohttp's low-level server: the public HTTP port (`HttpPort`: the KServe v2 API that
`policy.http_route` allows, each inference body read once under the front's bounds and passed on to tritonserver)
and the metrics port (`MetricsPort`: tritonserver's metrics page with the front's counters)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import HttpVersion11, web

from videoitg.answer.errors import refusal_body
from videoitg.contract.access import AUTHORIZATION, SCHEME, KeyStore
from videoitg.contract.protocol import OTHER_INPUTS_BYTES
from videoitg.front.bounds import (
    ABANDONED,
    BodyReader,
    BodyRefused,
    ByteBudget,
    Stopping,
    UnreadableBody,
    stream_body,
)
from videoitg.front.config import METRICS_CONNECTIONS, FrontConfig, FrontCounters
from videoitg.front.connections import LINGER_S, Connections, HttpServer, ServerLog, listen
from videoitg.front.lost import UNREACHABLE, InFlight, ModelLost, WatchedUpstream, error_text, while_away
from videoitg.front.policy import (
    KEY_REFUSAL,
    LIVE_PATH,
    MAX_HEADER_BYTES,
    KeyOutcome,
    Reason,
    Refusal,
    bounded_error_body,
    framing_error,
    header_size_refusal,
    http_infer_error,
    http_route,
    is_health,
    json_length,
    key_exempt_http,
    key_outcome,
)
from videoitg.front.tls import Certificates
from videoitg.front.tritonserver import Upstream, UpstreamError

READ_BUFSIZE = 256 << 10  # aiohttp's read buffer per connection (its high-water mark is twice this)
PASS_HEADERS = ("Content-Type", "Content-Encoding", "Inference-Header-Content-Length")
# An extra route of the HTTP port: its handler, given the port (its bounds, budget, counters, `reading`, `forward`
# and `refuse`) and the request.
Route = Callable[["HttpPort", web.BaseRequest], Awaitable[web.StreamResponse]]
Closer = Callable[[], Awaitable[None]]  # what extra routes hold open (their own clients), closed at the port's end


def refused(counters: FrontCounters, protocol: str, err: Refusal, close: bool = True,
            body: Any = None) -> web.Response:
    """The answer to a refused request (its reason's HTTP status; `body`, else KServe's `{"error": ...}`), counted
    as the client's fault."""
    counters.reject(protocol, err)
    status = err.reason.http
    headers = {"Retry-After": "1"} if status == 503 else {"WWW-Authenticate": SCHEME} if status == 401 else None
    r = web.json_response({"error": err} if body is None else body, status=status, headers=headers)
    if close:
        r.force_close()  # the answer says `Connection: close`, and the connection closes after it
    return r


async def _server(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], cfg: FrontConfig, cap: int,
                  port: int, name: str, counters: FrontCounters, conns: Connections,
                  openai_paths: tuple[str, ...] = (), certs: Certificates | None = None
                  ) -> tuple[web.ServerRunner, asyncio.Server]:
    """aiohttp's low-level server running `handler` for every request it parsed (no router or `100 Continue` of its
    own), listening on `port` with at most `cap` connections (past it, the one idle longest makes room); what its
    parser refuses answered as JSON, the OpenAI error shape on `openai_paths` (`HttpServer`); over TLS with
    `certs`.
    auto_decompress off: a compressed body is never inflated here, on any route (the inference route refuses one
    before reading it; a body on another route, never read, is still drained after the answer)."""

    async def answer(request: web.BaseRequest) -> web.StreamResponse:
        """`handler`'s answer, written before its connection counts as idle again."""
        conns.started(request.protocol)
        try:
            response = await handler(request)
            await response.prepare(request)
            await response.write_eof()
            # a body refused at a stop, still arriving, or one the HTTP parser cannot read on: closed once its
            # refusal is written, none of the rest read
            if isinstance(request.content.exception(), (Stopping, UnreadableBody)):
                request.protocol.force_close()
            return response
        finally:
            conns.answered(request.protocol, request.content.is_eof())

    server = HttpServer(answer, conns, openai_paths, access_log=None, logger=ServerLog(name, counters),
                        keepalive_timeout=cfg.keepalive_s, lingering_time=LINGER_S, read_bufsize=READ_BUFSIZE,
                        auto_decompress=False)
    runner = web.ServerRunner(server, shutdown_timeout=cfg.shutdown_s)
    await runner.setup()
    tls = None if certs is None else functools.partial(certs.context, name)
    return runner, await listen(server, cfg.host, port, cap, name, counters, conns, tls)


class _Port:
    """What both aiohttp ports share: the listener, the port it got, and a connection pool toward tritonserver."""

    def __init__(self, cfg: FrontConfig, counters: FrontCounters, triton_url: str, certs: Certificates | None = None):
        self.cfg, self.counters, self.certs = cfg, counters, certs
        self.triton = Upstream(triton_url)
        self.runner: web.ServerRunner | None = None
        self.listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the OS picked for port 0)."""
        assert self.listener is not None
        return self.listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.close_listener()
        await self.cleanup()

    def close_listener(self) -> None:
        if self.listener is not None:
            self.listener.close()

    async def cleanup(self) -> None:
        """Requests in flight get `shutdown_s`, then the connections and the pool are closed."""
        if self.runner is not None:
            await self.runner.cleanup()
        self.triton.close()


class HttpPort(_Port):
    """The public HTTP port: every request aiohttp parsed is answered here, whatever its target. Extra routes
    (`routes`: exact path -> `Route`, the OpenAI error shape's; `closers`: what they hold open; `pages`: the page's
    files, webpage.py) are served first; everything else is the KServe v2 API as `http_route` allows it (the only
    router), health and metadata passed on, inference checked and passed on, the rest refused. At most
    `max_connections` connections: past it the one idle longest is closed to take a new one, or with none idle the
    new one is answered 503 and closed. With `keys`, a request without one of them is answered 401 before anything
    else is looked at (`policy.key_outcome`), but health and the page's files; with `certs`, TLS."""

    def __init__(self, cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget,
                 routes: Mapping[str, Route] | None = None, closers: Sequence[Closer] = (),
                 pages: Mapping[str, Route] | None = None, in_flight: InFlight | None = None,
                 keys: KeyStore | None = None, certs: Certificates | None = None):
        # Pooled keep-alive connections (tritonserver.py). A model load holds the tritonserver thread its connection is
        # served on, so the launcher reloads over gRPC (`TritonServer._admin`). No Accept-Encoding of the front's
        # own: a client that asked for none gets none. Each inference is held (`in_flight`, shared with the gRPC
        # port) until answered: one a model's process took with it is answered here (`lost.py`).
        super().__init__(cfg, counters, cfg.triton_http, certs)
        self.triton = WatchedUpstream(cfg.triton_http, in_flight or InFlight())
        self.budget, self.keys = budget, keys
        self.routes: dict[str, Route] = dict(routes or {})
        self.pages: dict[str, Route] = dict(pages or {})  # refused in KServe's error shape, as the API's routes
        self.closers = tuple(closers)
        self.conns = Connections()
        self.readers: set[BodyReader] = set()  # the request bodies being read (`reading`)
        self.stopping = False

    async def start(self) -> None:
        self.runner, self.listener = await _server(self.handle, self.cfg, self.cfg.max_connections,
                                                   self.cfg.http_port, "http", self.counters, self.conns,
                                                   tuple(self.routes), self.certs)

    async def stop(self) -> None:
        """No new connection; idle keep-alive connections are closed at once, a body still arriving is refused at
        once (503, `Connection: close`: send it again, to another server), requests in flight get `shutdown_s`."""
        self.close_listener()
        self.stopping = True
        for reader in list(self.readers):
            reader.stop()
        await self.cleanup()

    async def cleanup(self) -> None:
        """The port's own clean-up, then what its extra routes hold open (`closers`)."""
        await super().cleanup()
        for close in self.closers:
            await close()

    @contextlib.asynccontextmanager
    async def reading(self, request: web.BaseRequest, limit: int | None = None) -> AsyncIterator[BodyReader]:
        """A reader of `request`'s body under the port's bounds (`max_request_bytes`, or the route's lower `limit`;
        the held-bytes budget, `body_idle_s`) for the block, the one way a route reads a body: a stop refuses a body
        still arriving at once (`stop`), a body whose client shut its side before the handler ran is refused as
        abandoned (`refusal` set before any read), and the bytes it took go back to the budget when the block ends
        (or at `release`)."""
        reader = BodyReader(request.content, limit or self.cfg.max_request_bytes, self.budget, self.cfg.body_idle_s)
        self.conns.reading[request.protocol] = request.content
        self.readers.add(reader)
        try:
            if request.protocol in self.conns.shut and not request.content.is_eof():  # shut before this handler ran
                reader.refusal = Refusal(ABANDONED, Reason.ABANDONED)
            elif self.stopping:
                reader.stop()
            yield reader
        finally:
            self.readers.discard(reader)
            self.conns.reading.pop(request.protocol, None)
            reader.release()

    async def forward(self, method: str, path: str, body: bytes | AsyncIterator[bytes] | None,
                      headers: dict[str, str], timeout_s: float, reader: BodyReader | None = None) -> web.Response:
        """tritonserver's answer; `reader`: the body being passed on, whose refusal (the client's fault) is
        answered as such when it ends the request."""
        try:
            answer = await self.triton.request(method, path, headers, body, timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError, BodyRefused) as e:
            e.__traceback__ = None  # it would hold the request's frames, and so its body
            if reader is not None and reader.refusal is not None:
                return self.refuse_body(reader.refusal)
            self.counters.unavailable["http"] += 1
            if isinstance(e, ModelLost):  # the model's process died with it: send it again
                return web.json_response({"error": str(e)}, status=503, headers={"Retry-After": "1"})
            why = f"no answer within {timeout_s:.0f} s" if isinstance(e, asyncio.TimeoutError) else str(e)  # a reset
            return web.json_response({"error": UNREACHABLE.format(why=f"{type(e).__name__}: {why}")}, status=503)
        passed = {k: answer.headers[k.lower()] for k in PASS_HEADERS if k.lower() in answer.headers}
        data = answer.body
        if answer.status >= 400 and "Content-Encoding" not in passed:
            data = bounded_error_body(data)
            model = path.split("/")[3] if path.startswith("/v2/models/") else ""
            if model in self.cfg.models and (away := while_away(model, error_text(data))):
                self.counters.unavailable["http"] += 1
                return web.json_response({"error": away}, status=503, headers={"Retry-After": "1"})
        return web.Response(status=answer.status, body=data, headers=passed)

    def refuse(self, err: Refusal, close: bool = True) -> web.Response:
        return refused(self.counters, "http", err, close)

    def refuse_body(self, err: Refusal) -> web.Response:
        return self.too_large(None) if err.reason is Reason.TOO_LARGE else self.refuse(err)

    def too_large(self, n: int | None) -> web.Response:
        size = f"of {n} bytes " if n is not None else ""
        why = f"the served --max-video-bytes per video of a batch, plus {OTHER_INPUTS_BYTES >> 20} MiB"
        err = f"request body {size}is over the server's limit of {self.cfg.max_request_bytes} bytes ({why})"
        return self.refuse(Refusal(err, Reason.TOO_LARGE))

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if self.keys is not None and (refusal := self.key_refusal(request)) is not None:
            return refusal
        route = self.routes.get(request.path) or self.pages.get(request.path)
        return await (route(self, request) if route is not None else self.answer(request))

    def key_refusal(self, request: web.BaseRequest) -> web.Response | None:
        """The 401 of a request that needs a key and has none of the server's (the same answer for a missing and a
        wrong one, in the route's error shape: OpenAI's on the answer endpoint), counted by outcome; None: it may
        go on. Its body, if any, is not read: the connection closes."""
        assert self.keys is not None
        if key_exempt_http(request.method, request.path, self.pages):
            return None
        outcome = key_outcome(request.headers.getall(AUTHORIZATION, []), self.keys)
        self.counters.key_checked("http", outcome)
        if outcome is KeyOutcome.ACCEPTED:
            return None
        body = refusal_body(KEY_REFUSAL, "api_key") if request.path in self.routes else None
        return refused(self.counters, "http", KEY_REFUSAL, body=body)

    async def answer(self, request: web.BaseRequest) -> web.StreamResponse:
        """The KServe v2 API."""
        cfg = self.cfg
        route = http_route(request.method, request.path, cfg.models)
        if isinstance(route, Refusal):  # the body, if any, is not read: the connection closes
            return self.refuse(route)
        kind, path = route
        headers = {k: request.headers[k] for k in ("Content-Type", "Inference-Header-Content-Length", "Accept-Encoding")
                   if k in request.headers}
        if kind == "pass":
            if path == LIVE_PATH and self.triton.in_flight.restarting:  # the launcher is starting it again
                return web.Response(status=200)
            return await self.forward("GET", path, None, headers,
                                      cfg.health_timeout_s if is_health(path) else cfg.pass_timeout_s)
        # All before the body is read (and before `100 Continue`).
        if (err := framing_error(request.headers.items())) is not None:
            return self.refuse(err)
        declared = request.content_length
        if declared is not None and declared > cfg.max_request_bytes:
            return self.too_large(declared)
        n = json_length(request.headers.get("Inference-Header-Content-Length"), declared)
        if isinstance(n, Refusal):
            return self.refuse(n)
        if (err := await _continue(request)) is not None:
            return self.refuse(err)
        async with self.reading(request) as reader:
            return await self.infer(request, path, headers, reader, declared, n)

    async def infer(self, request: web.BaseRequest, path: str, headers: dict[str, str], reader: BodyReader,
                    declared: int | None, n: int | None) -> web.StreamResponse:
        """Reads the body's JSON header (its first `n` bytes; None: the whole body), checks it, then passes the
        body on: whole when it is all in hand or its length is not declared (a chunked request: tritonserver gets
        a Content-Length), else the rest as it arrives (`stream_body`)."""
        chunks, have = [], 0
        while (n is None or have < n) and (chunk := await reader.chunk()):
            chunks.append(chunk)
            have += len(chunk)
            if n is None and have > MAX_HEADER_BYTES:  # a chunked body, all of it JSON header
                chunks.clear()
                return self.refuse(header_size_refusal())
        if reader.refusal is None and declared is None:
            while chunk := await reader.chunk():
                chunks.append(chunk)
                have += len(chunk)
        if reader.refusal is not None:
            chunks.clear()
            return self.refuse_body(reader.refusal)
        whole = declared is None or have == declared
        head = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        err = http_infer_error(head if whole else head[:n], request.headers.get("Inference-Header-Content-Length"),
                               self.cfg.max_inputs, self.cfg.max_outputs)
        if err is not None:
            return self.refuse(err, close=not whole)
        headers = self.cfg.keyed(headers)
        if whole:
            return await self.forward("POST", path, head, headers, self.cfg.infer_timeout_s)
        body, chunks, head = stream_body(chunks, reader), [], b""  # the stream alone holds what it has not passed on
        return await self.forward("POST", path, body, {**headers, "Content-Length": str(declared)},
                                  self.cfg.infer_timeout_s, reader)


async def _continue(request: web.BaseRequest) -> Refusal | None:
    """`100 Continue` for a request that asked (Expect: 100-continue), sent once the front accepts it (aiohttp's
    low-level server sends none of its own)."""
    expect = request.headers.get("Expect")
    if expect is None or request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return Refusal(f"Expect {expect[:32]!r} is not supported", Reason.EXPECT)
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None


class MetricsPort(_Port):
    """The metrics port: GET and HEAD /metrics, tritonserver's page with the front's counters after it; anything
    else 404. At most METRICS_CONNECTIONS connections: past it, as on the HTTP port, the one idle longest makes
    room (a crowd of silent connections cannot keep a scraper out)."""

    def __init__(self, cfg: FrontConfig, counters: FrontCounters, certs: Certificates | None = None):
        super().__init__(cfg, counters, cfg.triton_metrics, certs)

    async def start(self) -> None:
        self.runner, self.listener = await _server(self.handle, self.cfg, METRICS_CONNECTIONS, self.cfg.metrics_port,
                                                   "metrics", self.counters, Connections(), certs=self.certs)

    async def handle(self, request: web.BaseRequest) -> web.Response:
        if request.method not in ("GET", "HEAD") or request.path != "/metrics":
            return refused(self.counters, "metrics", Refusal(f"{request.method[:16]} {request.path[:80]} is not "
                                                             "served: this port answers GET and HEAD /metrics",
                                                             Reason.ROUTE))
        try:
            answer = await self.triton.request("GET", "/metrics", {}, None, self.cfg.pass_timeout_s)
        except (UpstreamError, OSError, asyncio.TimeoutError) as e:
            return web.Response(status=503, text=f"metrics unavailable ({type(e).__name__})\n{self.counters.text()}")
        return web.Response(status=answer.status, body=answer.body + self.counters.text().encode(),
                            content_type="text/plain")
