"""A byte relay: each listening port passes its connections' bytes both ways to one upstream address, unread. It
is what one more process on a request's path costs by itself, the floor under any front (`bench_front.py --relay`).

    python -m benchmarks.serving.relay PORT HOST:PORT [PORT HOST:PORT ...]
"""

from __future__ import annotations

import argparse
import asyncio

HIGH_WATER = 1 << 20  # bytes queued toward one side before the other side's reading pauses


class _Side(asyncio.Protocol):
    """One socket of a relayed pair: what it receives is written to `peer`; while `peer` cannot take more, this
    side stops reading."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.early: list[bytes] = []  # received before the peer connected
        self.ended = False  # the end of this side's sending, received before the peer connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(HIGH_WATER)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.peer.transport is None:
            self.early.append(data)
        else:
            self.peer.transport.write(data)

    def eof_received(self) -> bool:
        if self.peer is None or self.peer.transport is None:
            self.ended = True
        else:
            self.peer.transport.write_eof()
        return True  # the other direction may still carry bytes

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def join(self, peer: _Side) -> None:
        """Pair with `peer`, now connected, and pass on what arrived before."""
        self.peer, peer.peer = peer, self
        for side in (self, peer):
            for data in side.early:
                side.peer.transport.write(data)
            side.early.clear()
            if side.ended:
                side.peer.transport.write_eof()


async def _serve(port: int, upstream: str, side: type[_Side] = _Side) -> asyncio.Server:
    """Relay `port` to `upstream`; each client's socket is a `side` (a subclass may also keep what it receives)."""
    host, up_port = upstream.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    connecting: set[asyncio.Task] = set()

    def accepted() -> _Side:
        client = side()

        async def connect() -> None:
            try:
                transport, server = await loop.create_connection(_Side, host, int(up_port))
            except OSError:
                if client.transport is not None:
                    client.transport.close()
                return
            if client.transport is None:  # the client left meanwhile
                transport.close()
            else:
                client.join(server)

        task = loop.create_task(connect())
        connecting.add(task)
        task.add_done_callback(connecting.discard)
        return client

    return await loop.create_server(accepted, "127.0.0.1", port)


async def main(pairs: list[tuple[int, str]]) -> None:
    servers = [await _serve(port, upstream) for port, upstream in pairs]
    await asyncio.gather(*(s.serve_forever() for s in servers))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     usage="python -m benchmarks.serving.relay PORT HOST:PORT [PORT HOST:PORT ...]")
    parser.add_argument("routes", nargs="+", metavar="PORT HOST:PORT",
                        help="a port to listen on, then the upstream address its connections are relayed to")
    args = parser.parse_args().routes
    if len(args) % 2:
        parser.error("each port needs its upstream address: PORT HOST:PORT pairs")
    asyncio.run(main([(int(args[i]), args[i + 1]) for i in range(0, len(args), 2)]))
