"""The HTTP ports' client connections, under aiohttp's low-level server: a listener with a cap on open connections
(`listen`: past it the connection idle longest makes room), a half-close read as the end of the client's sending
(`Connection`), aiohttp's server log, which counts what its parser refused (`ServerLog`), and what that parser
refuses answered as the port answers its own refusals (`HttpServer`)."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

from videoitg.answer.errors import refusal_body
from videoitg.front.bounds import UnreadableBody
from videoitg.front.config import KEEPALIVE_S, FrontCounters
from videoitg.front.policy import Reason, Refusal
from videoitg.front.tls import Handshake

LINGER_S = 2.0  # a refused body still arriving is read and dropped this long, so the refusal reaches the client


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server log for one port. A request aiohttp's own parser refused (bad framing, control bytes, a line
    or header over its bound, TLS on the plain port: answered 400 by `Handler`, the connection closed) is the
    client's fault: counted as `reason="syntax"`, not logged. Anything else goes to aiohttp's server log (the front's
    handlers raise no HttpProcessingError: `BodyReader` turns a body's errors into refusals)."""

    def __init__(self, protocol: str, counters: FrontCounters):
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.protocol, self.counters = protocol, counters

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            self.counters.reject(self.protocol, Refusal("", Reason.SYNTAX))
            return
        super().log(level, msg, *args, **kwargs)


HEAD_BYTES = 64  # of a request, kept to tell which route a request the parser refused was for (its request line)
_COMPLAINT = re.compile(r"[A-Za-z0-9 ]{1,80}")  # the words a parser's message starts with, before any bytes it quotes


class HttpServer(web.Server):
    """aiohttp's low-level server whose connections (`Handler`) answer what its HTTP parser refuses as the port
    answers its own refusals; `openai_paths`: the routes whose refusals take the OpenAI error shape."""

    def __init__(self, handler: Any, conns: Connections, openai_paths: tuple[str, ...] = (), **kwargs: Any):
        super().__init__(handler, **kwargs)
        self.conns, self.openai_paths = conns, openai_paths

    def __call__(self) -> RequestHandler:
        inner = Handler(self, loop=self._loop, **self._kwargs)  # as web.Server makes its own (aiohttp 3.9-3.14)
        inner.server = self
        return inner


class Handler(RequestHandler):
    """aiohttp's protocol for one connection. A request its HTTP parser refuses (a malformed chunked body, a line or
    header over its bound, control bytes) is answered as the port answers its own refusals: JSON, the OpenAI error
    shape for a request to one of the server's `openai_paths` (told by its request line), KServe's `{"error": ...}`
    otherwise, naming the parser's complaint without quoting the client's bytes; counted as `syntax` (`ServerLog`).
    A body a handler is reading when the parser refuses what follows it ends at once as malformed."""

    server: HttpServer

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        body = self.server.conns.reading.get(self)
        if body is not None and not body.is_eof() and (exc := _refused_by_parser(self, True)) is not None:
            # refused by its reader as malformed (bounds.BodyReader): one answer, one count, the connection closed
            body.set_exception(UnreadableBody(complaint(exc)))

    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        answer = super().handle_error(request, status, exc, message)  # logged (counted), the connection to close
        if not isinstance(exc, HttpProcessingError):
            return answer
        text = f"the request is not HTTP/1.1 this server reads ({complaint(exc)})"
        conn = self.server.conns.of.get(self)
        line = conn.head.split(b" ", 2)[1:2] if conn is not None else []
        path = line[0].split(b"?", 1)[0].decode("latin-1") if line else ""
        body = refusal_body(text, Reason.SYNTAX.label or "syntax") if path in self.server.openai_paths else \
            {"error": text}
        reply = web.json_response(body, status=status)
        reply.force_close()
        return reply


def complaint(exc: HttpProcessingError) -> str:
    """What aiohttp's parser refused, in the words its message starts with, without the bytes it quotes."""
    words = _COMPLAINT.match(exc.message or "")
    return type(exc).__name__ + (f": {words.group().strip()}" if words else "")


def _refused_by_parser(inner: Any, take: bool = False) -> HttpProcessingError | None:
    """The error aiohttp's parser queued to be answered for a connection (what it refused in the bytes it was given
    last), if any, taken off the queue with `take`: aiohttp 3.9-3.14 queue it among the connection's requests
    (`_messages`) as an error entry."""
    queued = getattr(inner, "_messages", None)
    if not queued:
        return None
    exc = getattr(queued[-1][0], "exc", None)
    if not isinstance(exc, HttpProcessingError):
        return None
    if take:
        queued.pop()
    return exc


class _Closed(asyncio.Protocol):
    """A TLS connection past the cap: closed at once (a plain-text answer would not be read)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Refused(asyncio.Protocol):
    """A connection past the cap: answered 503 and closed at once, so it holds no file descriptor."""

    ANSWER = (f"HTTP/1.1 {Reason.CONNECTIONS.http} Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n"
              "Retry-After: 1\r\n\r\n").encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self.ANSWER)
        transport.close()


@dataclass
class Connections:
    """What a port's handler and its connections share, by each connection's aiohttp protocol: those with a
    request being answered (`busy`), the body the front is reading or passing on (`reading`), and those whose client
    shut its side while no body was being read (`shut`). aiohttp may have parsed a request whose handler has not run
    yet: a body its handler starts on a `shut` connection is whole already, or abandoned. `idle`: the connections
    with no request in hand, the one idle longest first (`evict`)."""

    busy: set[Any] = field(default_factory=set)
    reading: dict[Any, Any] = field(default_factory=dict)
    shut: set[Any] = field(default_factory=set)
    idle: dict[Connection, None] = field(default_factory=dict)
    of: dict[Any, Connection] = field(default_factory=dict)  # each aiohttp protocol's connection
    handshaking: int = 0  # TLS connections accepted whose handshake has not ended (aiohttp does not count them yet)

    def handshake_ended(self, ok: bool) -> None:
        self.handshaking -= 1

    def started(self, inner: Any) -> None:
        """A request's handler starts: its connection is not idle."""
        self.busy.add(inner)
        if (conn := self.of.get(inner)) is not None:
            self.idle.pop(conn, None)

    def answered(self, inner: Any, body_whole: bool) -> None:
        """A request is answered (its answer written): its connection is idle from now on, unless bytes of its
        body are still to come (it stays taken until its next request is answered)."""
        self.busy.discard(inner)
        if (conn := self.of.get(inner)) is not None:
            conn.fresh = True
            if body_whole and conn.transport is not None:
                self.idle[conn] = None

    def evict(self) -> bool:
        """Closes the connection idle longest, as nginx does at its connection limit: no request being answered,
        none parsed and waiting (a pipelining client's), no body arriving, no byte received since its last answer
        (or since it connected). False when there is none. A pipelining client whose next request has arrived only
        in part is not seen; such a client must be ready to send it again (RFC 9112, 9.3.2)."""
        while self.idle:
            conn = next(iter(self.idle))
            del self.idle[conn]
            inner = conn.inner
            if inner in self.busy or inner in self.reading or _queued(inner) or conn.transport is None:
                continue
            conn.transport.close()
            return True
        return False


def _queued(inner: Any) -> bool:
    """Whether aiohttp holds requests it parsed and has not handed to the handler yet (pipelined ones): its
    RequestHandler's `_messages` (aiohttp 3.9-3.14; an aiohttp without it reads as none queued)."""
    return bool(getattr(inner, "_messages", None))


class Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol, passed every event but the end of the client's sending. A client
    that sent its request and then shut its side (a half-close) still gets the answer: the connection stays open
    for the request in hand, takes no further one, and closes once it is answered; one with no request in hand
    by LINGER_S later closes then. A client that shuts its side in the middle of a body has abandoned it: the
    connection closes at once and the partial body is released (a body counts as whole once aiohttp has all of its
    bytes, read by the front or not). Idle from its accept until its first byte (`Connections.idle`)."""

    def __init__(self, inner: Any, conns: Connections):
        self.inner, self.conns = inner, conns
        self.transport: asyncio.BaseTransport | None = None
        self.head = b""  # the first HEAD_BYTES of the request being received (`Handler.handle_error`)
        self.fresh = True  # the next byte starts a request

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.conns.of[self.inner] = self
        self.conns.idle[self] = None
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.conns.idle.pop(self, None)  # a request arriving: idle again once it is answered
        if self.fresh:
            self.head, self.fresh = bytes(data[:HEAD_BYTES]), False
        elif len(self.head) < HEAD_BYTES:
            self.head += data[:HEAD_BYTES - len(self.head)]
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        body = self.conns.reading.get(self.inner)
        if body is not None and not body.is_eof():
            return self.inner.eof_received()  # None: the transport closes
        self.conns.shut.add(self.inner)
        self.inner.close()  # no further request; the one in hand is answered first
        asyncio.get_running_loop().call_later(LINGER_S, self._close_if_idle)
        # TLS has no half-close: its close_notify closes the connection whatever is answered (asyncio's TLS)
        tls = self.transport is not None and self.transport.get_extra_info("sslcontext") is not None
        return None if tls else True

    def _close_if_idle(self) -> None:
        if self.inner not in self.conns.busy and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conns.shut.discard(self.inner)
        self.conns.idle.pop(self, None)
        self.conns.of.pop(self.inner, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


def admitted(open_now: int, cap: int, evict: Callable[[], bool], counters: FrontCounters, name: str) -> bool:
    """Whether a port with `open_now` connections takes a new one: under `cap`, or once `evict` closed the one idle
    longest to make room (counted as `name`'s `idle_closed`); else it is refused (counted `connections`)."""
    if open_now < cap:
        return True
    if evict():
        counters.idle_closed[name] += 1
        return True
    counters.reject(name, Refusal("", Reason.CONNECTIONS))
    return False


async def listen(server: Any, host: str, port: int, cap: int, name: str, counters: FrontCounters,
                 conns: Connections, tls: Callable[[], ssl.SSLContext] | None = None) -> asyncio.Server:
    """aiohttp's low-level `server` listening on `host:port`, at most `cap` connections at once (TLS handshakes
    under way counted): past it a new one takes the place of the one idle longest (`admitted`), else it is refused.
    `tls`: each new connection's TLS context (None: plain TCP), its handshake within KEEPALIVE_S."""

    def protocol() -> asyncio.BaseProtocol:
        if not admitted(len(server.connections) + conns.handshaking, cap, conns.evict, counters, name):
            return _Refused() if tls is None else _Closed()
        conn = Connection(server(), conns)
        if tls is None:
            return conn
        conns.handshaking += 1
        return Handshake(conn, tls(), KEEPALIVE_S, conns.handshake_ended)

    return await asyncio.get_running_loop().create_server(protocol, host or None, port, reuse_address=True)
