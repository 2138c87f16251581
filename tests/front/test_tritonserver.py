"""The front's client for tritonserver's HTTP endpoints (`videoitg/front/tritonserver.py`), against a stand-in that
answers with scripted bytes: framing, pooled connections, what ends one, timeouts, bodies sent as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from videoitg.front.tritonserver import Upstream, UpstreamError

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class StandIn:
    """A server that reads each request whole (Content-Length framing) and writes `reply(request)`'s bytes; None
    closes the connection instead, and so does writing the answer to a request whose index is in `close_after`.
    `requests`: what it read whole, `partial`: requests cut short, `connections`: how many it accepted."""

    def __init__(self, reply: Callable[[bytes], bytes | None]):
        self.reply, self.close_after = reply, set()
        self.requests: list[bytes] = []
        self.partial: list[bytes] = []
        self.connections = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                try:
                    body = await reader.readexactly(length)
                except asyncio.IncompleteReadError as e:
                    self.partial.append(head + e.partial)
                    return
                self.requests.append(head + body)
                answer = self.reply(head + body)
                if answer is None:
                    return
                writer.write(answer)
                await writer.drain()
                if len(self.requests) - 1 in self.close_after:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def stand_in(reply: Callable[[bytes], bytes | None]) -> AsyncIterator[tuple[Upstream, StandIn]]:
    s = StandIn(reply)
    server = await asyncio.start_server(s.serve, "127.0.0.1", 0)
    up = Upstream(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
    try:
        yield up, s
    finally:
        up.close()
        server.close()


def test_answers_are_read_whole_on_one_pooled_connection() -> None:
    async def run() -> tuple[list[tuple[int, dict[str, str], bytes]], StandIn]:
        async with stand_in(lambda _: OK) as (up, s):
            got = []
            for body in (b"abc", None, b"x" * 100_000):
                a = await up.request("POST" if body else "GET", "/v2/models/m/infer", {"Content-Type": "t/x"}, body, 5)
                got.append((a.status, a.headers, a.body))
            return got, s

    got, s = asyncio.run(run())
    assert got == [(200, {"content-type": "application/json", "content-length": "2"}, b"{}")] * 3
    assert s.connections == 1 and len(s.requests) == 3
    assert s.requests[0].startswith(b"POST /v2/models/m/infer HTTP/1.1\r\n") and s.requests[0].endswith(b"\r\n\r\nabc")
    assert b"Content-Length: 3\r\n" in s.requests[0] and b"Content-Type: t/x\r\n" in s.requests[0]
    assert s.requests[2].endswith(b"x" * 100_000)


@pytest.mark.parametrize("answer, body, reused", [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0a\r\n" + b"d" * 10
     + b"\r\n0\r\nT: 1\r\n\r\n", b"abc" + b"d" * 10, True),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + OK, b"{}", True),
    (b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\nConnection: close\r\n\r\nerror", b"error", False),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", b"hi", False),
    (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
])
def test_each_framing_of_an_answer_and_whether_its_connection_is_kept(answer: bytes, body: bytes,
                                                                       reused: bool) -> None:
    async def run() -> tuple[bytes, bytes, int]:
        async with stand_in(lambda _: answer) as (up, s):
            first = (await up.request("GET", "/v2", {}, None, 5)).body
            second = (await up.request("GET", "/v2", {}, None, 5)).body
            return first, second, s.connections

    first, second, connections = asyncio.run(run())
    assert first == second == body
    assert connections == (1 if reused else 2)


def test_an_answer_split_anywhere_reads_as_it_does_whole() -> None:
    """Seeded random answers (Content-Length or chunked with extensions and trailers, after interim 1xx answers)
    arriving in random pieces, down to one byte: each reads as the same status, headers and body as when it
    arrives in one piece, and its body is the one sent."""
    import random

    from videoitg.front.tritonserver import _Connection

    class Transport:
        def __init__(self) -> None:
            self.aborted = False

        def abort(self) -> None:
            self.aborted = True

        def is_closing(self) -> bool:
            return self.aborted

    def answer(rng: random.Random) -> tuple[bytes, bytes]:
        body = rng.randbytes(rng.choice((0, 1, 7, 300, 5000)))
        head = b"".join(b"HTTP/1.1 100 Continue\r\n\r\n" for _ in range(rng.choice((0, 0, 1, 2))))
        head += b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n" % rng.choice((200, 400, 500))
        if rng.random() < 0.5:
            return head + b"Content-Length: %d\r\n\r\n" % len(body) + body, body
        chunks, at = [], 0
        while at < len(body):
            n = rng.randint(1, max(1, len(body) // 3))
            ext = rng.choice((b"", b";a=1", b" ;b"))
            chunks.append(b"%x%s\r\n%s\r\n" % (n if at + n <= len(body) else len(body) - at, ext,
                                                  body[at:at + n]))
            at += n
        trailer = rng.choice((b"", b"T: 1\r\n"))
        return head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(chunks) + b"0\r\n" + trailer + b"\r\n", body

    async def read(pieces: list[bytes]) -> tuple[int, dict[str, str], bytes] | str:
        conn = _Connection()
        conn.connection_made(Transport())  # type: ignore[arg-type]
        future = conn.expect()
        for piece in pieces:
            conn.data_received(piece)
        if not future.done():
            return "not whole"
        if future.exception() is not None:
            return repr(future.exception())
        a = future.result()
        return a.status, a.headers, a.body

    async def run() -> list[str]:
        faults = []
        for seed in range(300):
            rng = random.Random(seed)
            data, body = answer(rng)
            cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.choice((1, 3, 20)))))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
            if rng.random() < 0.1:
                pieces = [data[i:i + 1] for i in range(len(data))]
            whole, split = await read([data]), await read(pieces)
            if whole != split or isinstance(whole, str) or whole[2] != body:
                faults.append(f"seed {seed}: whole {str(whole)[:120]}, split {str(split)[:120]}")
        return faults

    faults = asyncio.run(run())
    assert not faults, faults[:5]


def test_an_answer_that_ends_with_its_connection() -> None:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    async def run() -> bytes:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        up = Upstream(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        try:
            return (await up.request("GET", "/v2", {}, None, 5)).body
        finally:
            up.close()
            server.close()

    assert asyncio.run(run()) == b"until the end"


@pytest.mark.parametrize("answer, error", [
    (b"HTTP/1.1 2OO OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
    (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed header line"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra", "past the end"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\n", "malformed Content-Length"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "unsupported Transfer-Encoding"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "closed the connection"),
    (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 20_000, "answer head over"),
])
def test_a_malformed_or_cut_answer_is_an_error_and_its_connection_is_dropped(answer: bytes, error: str) -> None:
    replies = iter([answer, OK])

    async def run() -> tuple[str, int, int]:
        async with stand_in(lambda _: next(replies)) as (up, s):
            s.close_after = {0}  # a cut answer is the last thing on its connection
            with pytest.raises(UpstreamError) as e:
                await up.request("GET", "/v2", {}, None, 5)
            after = await up.request("GET", "/v2", {}, None, 5)
            return str(e.value), after.status, s.connections

    text, status, connections = asyncio.run(run())
    assert error in text and status == 200 and connections == 2, (text, connections)


def test_a_connection_the_server_closed_while_idle_is_not_used_again() -> None:
    async def run() -> tuple[int, int]:
        async with stand_in(lambda _: OK) as (up, s):
            s.close_after = {0}  # as a restarted tritonserver would
            await up.request("GET", "/v2", {}, None, 5)
            await asyncio.sleep(0.1)
            return (await up.request("GET", "/v2", {}, None, 5)).status, s.connections

    assert asyncio.run(run()) == (200, 2)


def test_no_answer_within_the_bound_is_a_timeout_and_the_connection_is_dropped() -> None:
    async def run() -> tuple[float, int, int]:
        async with stand_in(lambda req: OK if b"fast" in req else b"") as (up, s):
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                await up.request("GET", "/slow", {}, None, 0.5)
            took = loop.time() - t0
            status = (await up.request("GET", "/fast", {}, None, 5)).status
            return took, status, s.connections

    took, status, connections = asyncio.run(run())
    assert 0.4 < took < 3 and status == 200 and connections == 2, (took, connections)


def test_a_body_goes_as_it_comes_and_one_that_fails_never_arrives_whole() -> None:
    class Refused(Exception):
        pass

    async def pieces(fail: bool) -> AsyncIterator[bytes]:
        for i in range(4):
            if fail and i == 2:
                raise Refused
            yield bytes([65 + i]) * 70_000
            await asyncio.sleep(0)

    async def run() -> tuple[StandIn, int]:
        async with stand_in(lambda _: OK) as (up, s):
            ok = await up.request("POST", "/p", {"Content-Length": "280000"}, pieces(False), 5)
            with pytest.raises(Refused):
                await up.request("POST", "/p", {"Content-Length": "280000"}, pieces(True), 5)
            await asyncio.sleep(0.2)
            return s, ok.status

    s, status = asyncio.run(run())
    assert status == 200 and len(s.requests) == 1 and s.requests[0].endswith(b"A" * 70_000 + b"B" * 70_000
                                                                             + b"C" * 70_000 + b"D" * 70_000)
    assert len(s.partial) == 1 and s.partial[0].endswith(b"B" * 70_000), [len(p) for p in s.partial]


@pytest.mark.parametrize("path, headers", [("/v2\r\nX: 1", {}), ("/v2", {"Content-Type": "a\r\nX-Injected: 1"}),
                                           ("/v2", {"X\nY": "1"}), ("/v2", {"A": "b\0"})])
def test_a_line_break_in_a_request_head_is_refused_before_anything_is_sent(path: str,
                                                                           headers: dict[str, str]) -> None:
    async def run() -> StandIn:
        async with stand_in(lambda _: OK) as (up, s):
            with pytest.raises(ValueError, match="line break"):
                await up.request("GET", path, headers, None, 5)
            await asyncio.sleep(0.1)
            return s

    s = asyncio.run(run())
    assert s.requests == [] and s.partial == []


def test_a_server_that_stops_reading_a_body_still_ends_the_request_at_its_bound() -> None:
    """tritonserver takes no more bytes (the connection's buffers fill, sending waits): the request still fails
    at its bound, not when the client's body ends."""
    stop = asyncio.Event()

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()  # never reads
        writer.close()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(64):
            yield b"x" * (1 << 20)

    async def run() -> float:
        server = await asyncio.start_server(stalled, "127.0.0.1", 0)
        up = Upstream(f"127.0.0.1:{server.sockets[0].getsockname()[1]}")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await up.request("POST", "/p", {"Content-Length": str(64 << 20)}, body(), 0.5)
            return loop.time() - t0
        finally:
            stop.set()
            up.close()
            server.close()

    assert 0.4 < asyncio.run(run()) < 3
