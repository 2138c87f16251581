"""The front's transport under hostile clients (issue 36), in this process in front of a small aiohttp stand-in for
tritonserver's HTTP endpoint: timeouts, caps, held bytes, headers, `100 Continue`, a half-close, its counters."""

from __future__ import annotations

import asyncio
import gc
import gzip
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from aiohttp import web

from videoitg.serving import front
from videoitg.serving.protocol import TOP

BODY = json.dumps({"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1],
                               "data": ["when does the dog jump?"]}]}).encode()


async def upstream_echo(request: web.Request) -> web.Response:
    """Stands where tritonserver's HTTP endpoint stands: says what reached it."""
    body = await request.read()
    if request.path == "/metrics":
        return web.Response(text="nv_inference_request_success 0\n")
    return web.json_response({"headers": dict(request.headers), "body_bytes": len(body)})


@asynccontextmanager
async def running_front(upstream: Callable[[web.Request], Awaitable[web.StreamResponse]] = upstream_echo,
                        **kw: Any) -> AsyncIterator[tuple[int, int, front.FrontCounters]]:
    """(front's HTTP port, its metrics port, its counters)."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", upstream)
    up = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await up.setup()
    site = web.TCPSite(up, "127.0.0.1", 0)
    await site.start()
    up_port = site._server.sockets[0].getsockname()[1]
    cfg = front.FrontConfig(**{
        "host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0,
        "triton_http": f"127.0.0.1:{up_port}", "triton_grpc": "127.0.0.1:1", "triton_metrics": f"127.0.0.1:{up_port}",
        "models": (TOP,), "max_request_bytes": 4 << 20, "shutdown_s": 1.0, **kw})
    counters = front.FrontCounters()
    runners, listeners = await front.start_http(cfg, counters)
    try:
        yield (listeners[0].sockets[0].getsockname()[1], listeners[1].sockets[0].getsockname()[1], counters)
    finally:
        await front.stop_http(runners, listeners)
        await up.cleanup()


def infer_head(length: int, *extra: str) -> bytes:
    lines = [f"POST /v2/models/{TOP}/infer HTTP/1.1", "Host: x", "Content-Type: application/json",
             f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def exchange(port: int, data: bytes, eof: bool = False, timeout: float = 10.0) -> bytes:
    """Send `data` (then a half-close if `eof`), read until the front closes or `timeout`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    if eof:
        writer.write_eof()
    try:
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


def test_no_accept_encoding_is_added_toward_tritonserver() -> None:
    async def run() -> dict[str, str]:
        async with running_front() as (port, _, _):
            answer = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return json.loads(answer.split(b"\r\n\r\n", 1)[1])["headers"]

    seen = asyncio.run(run())
    assert "Accept-Encoding" not in seen, seen


def test_100_continue_comes_only_after_the_decision() -> None:
    async def run() -> tuple[bytes, bytes]:
        async with running_front() as (port, _, _):
            refused = await exchange(port, infer_head(64 << 20, "Expect: 100-continue"))
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(infer_head(len(BODY), "Expect: 100-continue"))
            first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(BODY)
            rest = await asyncio.wait_for(reader.read(1 << 16), 10)
            writer.close()
            return refused, first + rest

    refused, accepted = asyncio.run(run())
    assert refused.startswith(b"HTTP/1.1 413") and b"100 Continue" not in refused, refused[:200]
    assert accepted.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200"), accepted[:200]


def test_a_complete_request_then_a_half_close_is_answered() -> None:
    async def run() -> bytes:
        async with running_front() as (port, _, _):
            return await exchange(port, infer_head(len(BODY)) + BODY, eof=True)

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200") and b'"body_bytes": %d' % len(BODY) in answer, answer[:300]


def test_a_stalled_tritonserver_gets_503_within_the_stated_bound() -> None:
    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    async def run() -> tuple[bytes, bytes, float, str]:
        async with running_front(never, pass_timeout_s=1.0, infer_timeout_s=1.5) as (port, _, counters):
            t0 = time.monotonic()
            health = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            infer = await exchange(port, infer_head(len(BODY), "Connection: close") + BODY)
            return health, infer, time.monotonic() - t0, counters.text()

    health, infer, took, text = asyncio.run(run())
    assert health.startswith(b"HTTP/1.1 503") and infer.startswith(b"HTTP/1.1 503"), (health[:100], infer[:100])
    assert b"no answer within 2 s" in infer  # the bound is named (1.5 s, rounded)
    assert took < 6, took
    assert 'videoitg_front_unavailable{protocol="http"} 2' in text


def test_connections_are_capped_and_silent_ones_time_out() -> None:
    async def run() -> tuple[list[bytes], bytes, float, bytes]:
        async with running_front(max_connections=4, keepalive_s=1.0) as (port, _, _):
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await asyncio.sleep(0.1)
            over = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            t0 = time.monotonic()  # the four never send a byte (one sends half a header): closed after keepalive_s
            idle[0][1].write(b"GET /v2/health/re")
            closed = [await asyncio.wait_for(r.read(), 10) for r, _ in idle]
            took = time.monotonic() - t0
            for _, w in idle:
                w.close()
            await asyncio.sleep(0.1)
            ok = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return closed, over, took, ok

    closed, over, took, ok = asyncio.run(run())
    assert over.startswith(b"HTTP/1.1 503"), over
    assert closed == [b""] * 4 and took < 4, (closed, took)
    assert ok.startswith(b"HTTP/1.1 200"), ok[:100]


def test_body_bytes_held_at_once_are_bounded_and_a_stalled_body_is_dropped() -> None:
    """Connections that declare big bodies, send part and wait: the front holds at most `held_bytes` of them
    (then 503), and drops a body that stops for `body_idle_s`."""
    part = b"x" * (600 << 10)

    async def run() -> tuple[bytes, bytes, int, int]:
        async with running_front(max_request_bytes=1 << 20, held_bytes=1 << 20, body_idle_s=1.5) as (port, _, _):
            r1, w1 = await asyncio.open_connection("127.0.0.1", port)
            w1.write(infer_head(1 << 20) + part)
            await asyncio.sleep(0.5)
            second = await exchange(port, infer_head(1 << 20) + part, timeout=10)
            first = await asyncio.wait_for(r1.read(), 10)
            w1.close()
            return first, second, 0, 0

    first, second, _, _ = asyncio.run(run())
    assert second.startswith(b"HTTP/1.1 503") and b"too many request bodies" in second, second[:200]
    assert first.startswith(b"HTTP/1.1 408") and b"stalled" in first, first[:200]


def test_a_second_content_encoding_is_refused_before_the_body_is_inflated() -> None:
    bomb = gzip.compress(b"{" + b" " * (8 << 20) + b"}")

    async def run() -> bytes:
        async with running_front() as (port, _, _):
            return await exchange(port, infer_head(len(bomb), "Content-Encoding: identity", "Content-Encoding: gzip")
                                  + bomb)

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 400") and b"content-encoding" in answer, answer[:200]


def test_the_metrics_page_carries_the_fronts_counters() -> None:
    async def run() -> bytes:
        async with running_front() as (port, metrics, _):
            await exchange(port, infer_head(5, "Connection: close") + b"{{{{{")
            await exchange(port, b"GET /v2/repository/index HTTP/1.1\r\nHost: x\r\n\r\n")
            return await exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    page = asyncio.run(run())
    assert b"nv_inference_request_success 0" in page
    assert b'videoitg_front_rejected{protocol="http",reason="json"} 1' in page
    assert b'videoitg_front_rejected{protocol="http",reason="route"} 1' in page


class Upload:
    """An aiohttp StreamReader's `readany` as an abandoned upload shows it: chunks, then the connection lost."""

    def __init__(self, chunks: int, size: int, end: BaseException | None):
        self.left, self.size, self.end = chunks, size, end

    async def readany(self) -> bytes:
        if self.left:
            self.left -= 1
            return b"\0" * self.size
        if self.end is not None:
            raise self.end
        return b""


def test_an_abandoned_upload_is_released_at_once() -> None:
    """64 MiB sent, then the connection closed: nothing keeps the partial body, not even the exception the
    request's stream keeps (its traceback held the buffer until a garbage collection)."""
    budget = front.ByteBudget(1 << 30)
    lost = ConnectionResetError("Connection lost")  # the stream keeps and re-raises this very object
    gc.disable()
    tracemalloc.start()
    try:
        got = asyncio.run(front.read_body(Upload(64, 1 << 20, lost), 128 << 20, 256 << 20, budget))
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert isinstance(got, front.Refusal) and got.reason == "abandoned"
    assert lost.__traceback__ is None
    assert held < 8 << 20, f"{held >> 20} MiB still held"
    assert budget.held == 0


def test_a_body_is_read_whole_and_its_bytes_are_taken_from_the_budget() -> None:
    budget = front.ByteBudget(10 << 20)
    body, taken = asyncio.run(front.read_body(Upload(4, 1 << 20, None), 4 << 20, 8 << 20, budget))
    assert len(body) == 4 << 20 and taken == 4 << 20 and budget.held == 4 << 20
    budget.give(taken)
    over = asyncio.run(front.read_body(Upload(9, 1 << 20, None), None, 8 << 20, budget))
    assert isinstance(over, front.Refusal) and over.reason == "too_large" and budget.held == 0
    small = front.ByteBudget(2 << 20)
    busy = asyncio.run(front.read_body(Upload(4, 1 << 20, None), 4 << 20, 8 << 20, small))
    assert isinstance(busy, front.Refusal) and busy.reason == "overloaded" and small.held == 0


def test_a_half_close_in_the_middle_of_a_body_releases_it_at_once() -> None:
    """A client that shuts its side before its body is complete has abandoned it: held until the body timeout,
    each reconnecting client's next upload came on top (the front held 960 MB for 4 x 160 MB)."""

    async def run() -> tuple[bytes, float]:
        async with running_front(body_idle_s=30) as (port, _, _):
            t0 = time.monotonic()
            answer = await exchange(port, infer_head(1 << 20) + b"x" * (256 << 10), eof=True, timeout=20)
            return answer, time.monotonic() - t0

    answer, took = asyncio.run(run())
    assert not answer.startswith(b"HTTP/1.1 2") and took < 5, (answer[:100], took)
