"""A recording byte relay: benchmarks/serving/relay.py's relay in front of a real server, keeping every byte its clients
send. What a test reads to see what a server received, without standing in for the server."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from benchmarks.serving.relay import _serve, _Side
from videoitg.launch.ports import free_port


@dataclass(frozen=True)
class Received:
    """One HTTP/1.1 request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_requests(data: bytes) -> list[Received]:
    """The HTTP/1.1 requests in one connection's bytes (Content-Length or chunked bodies), in order."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise ValueError(f"an incomplete request head: {head[:80]!r}")
        line, *fields = head.decode("latin-1").split("\r\n")
        method, path, _ = line.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size, _, data = data.partition(b"\r\n")
                n = int(size.split(b";")[0], 16)
                if n == 0:
                    data = data.partition(b"\r\n")[2]  # the empty trailer
                    break
                body += data[:n]
                data = data[n + 2:]
            body = bytes(body)
        else:
            n = int(headers.get("content-length", "0"))
            body, data = data[:n], data[n:]
        out.append(Received(method, path, headers, body))
    return out


class RecordingRelay:
    """A byte relay from a free loopback port to `upstream` (host:port), run on a thread of its own; `received()`
    lists the requests its clients sent since the last `clear()`, in the order their connections opened."""

    def __init__(self, upstream: str):
        self.port = free_port()
        self._connections: list[Any] = []  # each client connection's relay side: what it sent, whether it closed
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(upstream,), daemon=True, name="recording-relay")

    def _run(self, upstream: str) -> None:
        connections = self._connections

        class Recorded(_Side):
            def __init__(self) -> None:
                super().__init__()
                self.sent = bytearray()
                self.start = 0  # `clear` forgets what was sent before (a keep-alive connection carries on)
                self.answered = 0  # bytes the server sent back
                self.ended = False  # the client ended its sending (a shutdown of its side, or a close)
                connections.append(self)

            def data_received(self, data: bytes) -> None:
                self.sent += data
                super().data_received(data)

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                super().connection_made(transport)
                write = transport.write

                def counted(data: bytes) -> None:
                    self.answered += len(data)
                    write(data)

                transport.write = counted  # what the server's side passes on to this client

            def eof_received(self) -> bool:
                self.ended = True
                return super().eof_received()

            def connection_lost(self, exc: Exception | None) -> None:
                self.ended = True
                super().connection_lost(exc)

        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(_serve(self.port, upstream, Recorded))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.run_until_complete(server.wait_closed())
            self._loop.close()

    def __enter__(self) -> RecordingRelay:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def clear(self) -> None:
        """Forget what was received so far (between requests: the connections stay open)."""
        asyncio.run_coroutine_threadsafe(_clear(self._connections), self._loop).result(10)

    def _snapshot(self) -> list[tuple[bytes, bool, int]]:
        return asyncio.run_coroutine_threadsafe(_copy(self._connections), self._loop).result(10)

    def received(self) -> list[Received]:
        return [r for sent, _, _ in self._snapshot() for r in parse_requests(sent)]

    def saw(self, marker: bytes) -> bool:
        """Whether a client sent `marker`."""
        return any(marker in sent for sent, _, _ in self._snapshot())

    def ended(self, marker: bytes) -> bool:
        """Whether the client ended the connection whose bytes hold `marker` (False while none holds it)."""
        return any(ended for sent, ended, _ in self._snapshot() if marker in sent)

    def answered(self, marker: bytes) -> int:
        """The bytes the server sent back on the connection whose bytes hold `marker` (0 while none holds it)."""
        return sum(n for sent, _, n in self._snapshot() if marker in sent)


async def _copy(connections: list[Any]) -> list[tuple[bytes, bool, int]]:
    return [(bytes(c.sent[c.start:]), c.ended, c.answered) for c in connections]


async def _clear(connections: list[Any]) -> None:
    connections[:] = [c for c in connections if c.transport is not None]
    for c in connections:
        c.start = len(c.sent)
