"""The HTTP ports' client connections, under aiohttp's low-level server: a listener with a cap on open connections
(`listen`), a half-close read as the end of the client's sending (`Connection`), and aiohttp's server log, which
counts what its parser refused (`ServerLog`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from videoitg.serving.front.config import FrontCounters
from videoitg.serving.front.policy import Reason, Refusal

LINGER_S = 2.0  # a refused body still arriving is read and dropped this long, so the refusal reaches the client


class ServerLog(logging.LoggerAdapter):
    """aiohttp's server log for one port. A request aiohttp's own parser refused (bad framing, control bytes, a line
    or header over its bound, TLS on the plain port: aiohttp answers 400 and closes) is the client's fault: counted
    as `reason="syntax"`, not logged. Anything else goes to aiohttp's server log (the front's handlers raise no
    HttpProcessingError: `BodyReader` turns a body's errors into refusals)."""

    def __init__(self, protocol: str, counters: FrontCounters):
        super().__init__(logging.getLogger("aiohttp.server"), {})
        self.protocol, self.counters = protocol, counters

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if isinstance(kwargs.get("exc_info"), HttpProcessingError):
            self.counters.reject(self.protocol, Refusal("", Reason.SYNTAX))
            return
        super().log(level, msg, *args, **kwargs)


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
    yet: a body its handler starts on a `shut` connection is whole already, or abandoned."""

    busy: set[Any] = field(default_factory=set)
    reading: dict[Any, Any] = field(default_factory=dict)
    shut: set[Any] = field(default_factory=set)


class Connection(asyncio.Protocol):
    """One client connection: aiohttp's protocol, passed every event but the end of the client's sending. A client
    that sent its request and then shut its side (a half-close) still gets the answer: the connection stays open
    for the request in hand, takes no further one, and closes once it is answered; one with no request in hand
    by LINGER_S later closes then. A client that shuts its side in the middle of a body has abandoned it: the
    connection closes at once and the partial body is released (a body counts as whole once aiohttp has all of its
    bytes, read by the front or not)."""

    def __init__(self, inner: Any, conns: Connections):
        self.inner, self.conns = inner, conns
        self.transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        body = self.conns.reading.get(self.inner)
        if body is not None and not body.is_eof():
            return self.inner.eof_received()  # None: the transport closes
        self.conns.shut.add(self.inner)
        self.inner.close()  # no further request; the one in hand is answered first
        asyncio.get_running_loop().call_later(LINGER_S, self._close_if_idle)
        return True

    def _close_if_idle(self) -> None:
        if self.inner not in self.conns.busy and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.conns.shut.discard(self.inner)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


async def listen(server: Any, host: str, port: int, cap: int, name: str, counters: FrontCounters,
                 conns: Connections) -> asyncio.Server:
    """aiohttp's low-level `server` listening on `host:port`, at most `cap` connections at once (refusals counted
    as `name`'s)."""

    def protocol() -> asyncio.BaseProtocol:
        if len(server.connections) >= cap:
            counters.reject(name, Refusal("", Reason.CONNECTIONS))
            return _Refused()
        return Connection(server(), conns)

    return await asyncio.get_running_loop().create_server(protocol, host or None, port, reuse_address=True)
