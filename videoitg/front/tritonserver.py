"""tritonserver's HTTP endpoints as the front reaches them: HTTP/1.1 requests on pooled keep-alive connections,
each answer read whole. A client for one peer the launcher started on loopback, built for the front's cost per
request: a request is one write of its head and body (or of its pieces as they arrive), an answer one parse of the
bytes received. aiohttp's client cost the front about 0.4 ms of CPU per cached request more than this
(benchmarks/archive/2026-11.md, "The front: earlier runs")."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

MAX_HEAD_BYTES = 64 << 10  # an answer's status line and headers (a chunk-size line: far less)
CONNECT_S = 5.0  # the longest wait for a new connection, within a request's own bound
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})(?: [^\r\n]*)?")
_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,15}")
_UNSAFE = re.compile(r"[\r\n\0]")


class UpstreamError(Exception):
    """No usable answer: the connection was lost before the answer was whole, or the answer was malformed."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased; a header given twice: its first value
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one request at a time; `answer` is the future of the answer awaited."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = True
        self.answer: asyncio.Future[Answer] | None = None
        self._buf = bytearray()
        self._status = 0
        self._headers: dict[str, str] | None = None
        self._framing: int | str = 0  # bytes of body, "chunked", or "eof" (the body ends with the connection)
        self._chunk: int | None = None  # bytes left of the chunk being read (-1: the trailer)
        self._body = bytearray()
        self._writable: asyncio.Future[None] | None = None

    # -- asyncio's events
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # a stream transport (on any asyncio loop)

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self._fail(UpstreamError("bytes from tritonserver outside an answer"))
            return
        self._buf += data
        try:
            self._parse()
        except UpstreamError as e:
            self._fail(e)

    def eof_received(self) -> bool:
        if self._headers is not None and self._framing == "eof":
            self._done(bytes(self._buf))
        self._fail(UpstreamError("tritonserver closed the connection before its answer was whole"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(UpstreamError(f"connection to tritonserver lost ({type(exc).__name__ if exc else 'closed'})"))
        self.resume_writing()

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- one exchange
    @property
    def usable(self) -> bool:
        return self.reusable and self.transport is not None and not self.transport.is_closing()

    def expect(self) -> asyncio.Future[Answer]:
        self._status, self._headers, self._framing, self._chunk = 0, None, 0, None
        self._body.clear()
        self.answer = asyncio.get_running_loop().create_future()
        return self.answer

    async def drain(self) -> None:
        if self._writable is not None:
            await self._writable
        if self.transport is None:  # lost, or closed when the request's bound was over (`answer` says which)
            assert self.answer is not None
            await self.answer

    def close(self) -> None:
        self.reusable = False
        if self.answer is not None:  # nobody awaits it now
            if not self.answer.done():
                self.answer.cancel()
            elif not self.answer.cancelled():
                self.answer.exception()
        if self.transport is not None:
            self.transport.abort()

    def expire(self) -> None:
        """The request's bound is over: its answer fails with TimeoutError and the connection closes."""
        self._fail(asyncio.TimeoutError())

    def _fail(self, e: Exception) -> None:
        self.reusable = False
        if self.answer is not None and not self.answer.done():
            self.answer.set_exception(e)
        if self.transport is not None:
            self.transport.abort()

    def _done(self, body: bytes) -> None:
        assert self.answer is not None and self._headers is not None
        self.answer.set_result(Answer(self._status, self._headers, body))

    # -- the answer's bytes
    def _parse(self) -> None:
        while self._headers is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD_BYTES:
                    raise UpstreamError(f"answer head over {MAX_HEAD_BYTES} bytes")
                return
            self._head(bytes(self._buf[:end]))
            del self._buf[:end + 4]
        if self._framing == "chunked":
            if self._dechunk():
                self._done(bytes(self._body))
        elif isinstance(self._framing, int) and len(self._buf) >= self._framing:
            if len(self._buf) > self._framing:
                raise UpstreamError("bytes from tritonserver past the end of its answer")
            self._done(bytes(self._buf))
            self._buf.clear()

    def _head(self, head: bytes) -> None:
        status_line, _, rest = head.partition(b"\r\n")
        m = _STATUS_LINE.fullmatch(status_line)
        if m is None:
            raise UpstreamError(f"malformed status line from tritonserver: {status_line[:64]!r}")
        headers: dict[str, str] = {}
        for line in rest.split(b"\r\n") if rest else ():
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip():
                raise UpstreamError(f"malformed header line from tritonserver: {line[:64]!r}")
            headers.setdefault(name.decode("latin-1").lower(), value.strip().decode("latin-1"))
        status = int(m.group(2))
        if 100 <= status < 200:  # an interim answer (never asked for): the final one follows
            return
        self._status, self._headers = status, headers
        if m.group(1) == b"0" or headers.get("connection", "").lower() == "close":
            self.reusable = False
        if status in (204, 304):
            self._framing = 0
        elif "transfer-encoding" in headers:
            if headers["transfer-encoding"].lower() != "chunked":
                raise UpstreamError(f"unsupported Transfer-Encoding {headers['transfer-encoding'][:32]!r}")
            self._framing = "chunked"
        elif "content-length" in headers:
            if not headers["content-length"].isascii() or not headers["content-length"].isdigit():
                raise UpstreamError(f"malformed Content-Length {headers['content-length'][:32]!r}")
            self._framing = int(headers["content-length"])
        else:
            self._framing, self.reusable = "eof", False

    def _dechunk(self) -> bool:
        """Moves whole chunks from the buffer to the body; True once the last chunk and the trailer are in."""
        buf = self._buf
        while True:
            if self._chunk is None or self._chunk == -1:
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        raise UpstreamError("malformed chunked answer from tritonserver")
                    return False
                line = bytes(buf[:end])
                del buf[:end + 2]
                if self._chunk == -1:  # a trailer line; an empty one ends the answer
                    if not line:
                        if buf:
                            raise UpstreamError("bytes from tritonserver past the end of its answer")
                        return True
                    continue
                size = line.split(b";", 1)[0].strip()
                if _CHUNK_SIZE.fullmatch(size) is None:
                    raise UpstreamError(f"malformed chunk size from tritonserver: {line[:32]!r}")
                self._chunk = int(size, 16) or -1
                continue
            n = self._chunk
            if len(buf) < n + 2:
                return False
            if buf[n:n + 2] != b"\r\n":
                raise UpstreamError("malformed chunked answer from tritonserver")
            self._body += buf[:n]
            del buf[:n + 2]
            self._chunk = None


class Upstream:
    """HTTP/1.1 to `address` (host:port) on pooled keep-alive connections, any number at once."""

    def __init__(self, address: str):
        self.address = address
        host, _, port = address.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self._idle: list[_Connection] = []
        self._closed = False

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | AsyncIterator[bytes] | None, timeout_s: float) -> Answer:
        """tritonserver's answer within `timeout_s` (else TimeoutError; UpstreamError or OSError when there is
        none). A body given as pieces (`headers` then carry its Content-Length) is sent as they come; an exception
        they raise ends the request, and the connection is dropped, so tritonserver never sees the request whole."""
        if _UNSAFE.search("".join((path, *headers, *headers.values()))):
            raise ValueError("a header of the request has a line break or NUL")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.address}", *(f"{k}: {v}" for k, v in headers.items())]
        if isinstance(body, (bytes, bytearray)):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        conn = await self._connection(timeout_s)
        timer = loop.call_at(deadline, conn.expire)  # a timer, not a task per request as wait_for makes
        complete = False
        try:
            answer = conn.expect()
            assert conn.transport is not None
            if body is None or isinstance(body, (bytes, bytearray)):
                conn.transport.writelines((head, body) if body else (head,))
            else:
                conn.transport.write(head)
                async for piece in body:
                    if answer.done():  # answered before the body was whole: the connection cannot be reused
                        conn.reusable = False
                        break
                    await conn.drain()
                    conn.transport.write(piece)
            result = await answer
            complete = True
            return result
        finally:
            timer.cancel()
            if complete and conn.usable and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()

    async def _connection(self, timeout_s: float) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable:
                return conn
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(_Connection, self.host, self.port),
                                         min(timeout_s, CONNECT_S))
        return conn

    def close(self) -> None:
        """Closes the idle connections; those in use close when their request ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
