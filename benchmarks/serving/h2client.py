"""A raw HTTP/2 client of the front's gRPC port (the `h2` library): what grpcio's client cannot send. Used by
benchmarks/serving/availability.py and the front's transport tests (tests/front/)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse

from videoitg.front.grpc_policy import SERVICE


class H2Client:
    """A raw HTTP/2 client of the front's gRPC port: what grpcio's client cannot send (a message in parts, then a
    wait; a compressed flag; a length over the bound). `status(sid)` is the call's (grpc-status, grpc-message).
    It reads its answers' bytes without giving the front back their flow-control window unless `acknowledge`."""

    def __init__(self, acknowledge: bool = False) -> None:
        import h2.config
        import h2.connection

        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
        self.trailers: dict[int, dict[str, str]] = {}
        self.changed = asyncio.Event()
        self.goaway: int | None = None  # the error code of the front's GOAWAY
        self.acknowledge = acknowledge

    async def connect(self, target: str) -> H2Client:
        host, port = target.rsplit(":", 1)
        self.reader, self.writer = await asyncio.open_connection(host, int(port))
        self.h2.initiate_connection()
        self.flush()
        self.task = asyncio.ensure_future(self.read())
        return self

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    async def read(self) -> None:
        with contextlib.suppress(ConnectionError):  # the front closed with bytes of ours unread
            await self.read_frames()
        self.changed.set()

    async def read_frames(self) -> None:
        import h2.events

        while data := await self.reader.read(1 << 16):
            for ev in self.h2.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    self.trailers.setdefault(ev.stream_id, {}).update(dict(ev.headers))
                if isinstance(ev, h2.events.DataReceived) and self.acknowledge:
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                if isinstance(ev, h2.events.StreamReset):
                    self.trailers.setdefault(ev.stream_id, {}).setdefault("grpc-status", "reset")
                if isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev.error_code
            self.flush()
            self.changed.set()
            self.changed = asyncio.Event()

    def open(self, method: str = "ModelInfer", **headers: str) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                                   (":path", f"/{SERVICE}/{method}"), ("content-type", "application/grpc"),
                                   ("te", "trailers"), *headers.items()])
        self.flush()
        return sid

    async def send(self, sid: int, data: bytes, end: bool = False) -> None:
        """As the front's windows allow."""
        while data:
            n = min(len(data), self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size)
            if n == 0:
                await asyncio.wait_for(self.changed.wait(), 10)
                continue
            self.h2.send_data(sid, data[:n])
            data = data[n:]
            self.flush()
        if end:
            self.h2.end_stream(sid)
            self.flush()
        await self.writer.drain()

    async def status(self, sid: int, timeout: float = 10) -> tuple[str, str]:
        """(grpc-status, grpc-message), or ('open', '') after `timeout`."""
        end = time.monotonic() + timeout
        while "grpc-status" not in self.trailers.get(sid, {}):
            if (left := end - time.monotonic()) <= 0:
                return "open", ""
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        t = self.trailers[sid]
        return t["grpc-status"], urllib.parse.unquote(t.get("grpc-message", ""))

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()
        self.task.cancel()


def prefix(size: int, compressed: bool = False) -> bytes:
    """A gRPC message's 5-byte prefix: its compressed flag and length."""
    return bytes([compressed]) + size.to_bytes(4, "big")
