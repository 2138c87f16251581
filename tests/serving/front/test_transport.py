"""The front's transport under hostile clients (issue 36), in this process in front of a small aiohttp stand-in for
tritonserver's HTTP endpoint: timeouts, caps, held bytes, headers, `100 Continue`, a half-close, its counters."""

from __future__ import annotations

import asyncio
import gc
import gzip
import hashlib
import itertools
import json
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from aiohttp import web

from tests.support.h2client import H2Client, prefix
from tests.support.server import settled
from videoitg.serving import front
from videoitg.serving.protocol import TOP

T = TypeVar("T")
BODY = json.dumps({"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1],
                               "data": ["when does the dog jump?"]}]}).encode()
# The JSON header of a request whose video follows as binary data (Inference-Header-Content-Length)
VIDEO_HEADER = json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1]}]}).encode()


@pytest.fixture
def budgets(monkeypatch: pytest.MonkeyPatch) -> list[front.ByteBudget]:
    """The held-bytes budget of each front the test starts, in order."""
    made: list[front.ByteBudget] = []
    held_budget = front.held_budget
    monkeypatch.setattr(front, "held_budget", lambda cfg: made.append(held_budget(cfg)) or made[-1])
    return made


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
    runners, listeners = await front.start_http(cfg, counters, front.held_budget(cfg))
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


def test_the_metrics_port_has_a_small_cap_of_its_own() -> None:
    """Idle connections to the metrics port are refused past `METRICS_CONNECTIONS` (counted as the metrics port's)
    and take none of the HTTP port's."""
    hello = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    async def run() -> tuple[bytes, bytes, str]:
        async with running_front(max_connections=4) as (port, metrics, counters):
            idle = [await asyncio.open_connection("127.0.0.1", metrics) for _ in range(front.METRICS_CONNECTIONS)]
            await asyncio.sleep(0.1)
            over = await exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            ok = await exchange(port, hello)
            for _, w in idle:
                w.close()
            return over, ok, counters.text()

    over, ok, text = asyncio.run(run())
    assert over.startswith(b"HTTP/1.1 503") and ok.startswith(b"HTTP/1.1 200"), (over[:100], ok[:100])
    assert 'videoitg_front_rejected{protocol="metrics",reason="connections"} 1' in text, text


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


def test_a_compressed_body_is_never_inflated_on_any_route(caplog: pytest.LogCaptureFixture) -> None:
    """Bytes that are not gzip, sent as gzip: a decoder in the front would fail on them (and a bomb would be
    inflated, on whichever route it came). The health and metrics routes answer, inference refuses the encoding,
    and nothing is decoded."""
    body = b"\x1f\x8b" + b"not gzip" * 64
    enc = f"Content-Encoding: gzip\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()

    async def run() -> list[bytes]:
        async with running_front() as (port, metrics, _):
            return [await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n" + enc + body),
                    await exchange(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + enc + body),
                    await exchange(port, infer_head(len(body), "Content-Encoding: gzip") + body)]

    health, page, infer = asyncio.run(run())
    assert health.startswith(b"HTTP/1.1 200") and page.startswith(b"HTTP/1.1 200"), (health[:100], page[:100])
    assert infer.startswith(b"HTTP/1.1 400") and b"uncompressed" in infer, infer[:200]
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")], caplog.text[-2000:]


def test_a_chunked_body_all_json_header_is_refused_once_over_its_bound() -> None:
    """No Content-Length and no Inference-Header-Content-Length: the whole body is the JSON header, refused (413)
    as soon as more than MAX_HEADER_BYTES of it arrived, not once the client ends it (here it never does)."""
    chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
    head = f"POST /v2/models/{TOP}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()

    async def run() -> bytes:
        async with running_front(body_idle_s=60.0) as (port, _, _):
            return await exchange(port, head + chunk * (front.MAX_HEADER_BYTES // (64 << 10) + 2), timeout=10)

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 413") and b"binary data" in answer, answer[:200]


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


def test_what_aiohttp_cannot_parse_and_targets_no_route_takes_are_counted_without_tracebacks(
        caplog: pytest.LogCaptureFixture) -> None:
    """Requests aiohttp's own parser refuses (it answers 400 and closes) are counted as the client's fault
    (`reason="syntax"`), on each port, and logged without a traceback; a target no path can match (a CONNECT's
    host:port) is the front's 404, counted, with no `100 Continue` first."""
    host = b"Host: x\r\n"
    malformed = [b"POST /v2/models/%s/infer HTTP/1.1\r\n%sContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n" % (TOP.encode(), host),  # both framings
                 b"GET /v2/health/ready HTTP/1.1\r\n%sX-A: a\x01b\r\n\r\n" % host,  # a control byte
                 b"GET /v2 HTTP/1.1\r\n%sX: %s\r\n\r\n" % (host, b"a" * 20000),  # a header over aiohttp's bound
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"]  # a TLS hello on the plain port
    connect = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nExpect: 100-continue\r\n\r\n"

    async def run() -> tuple[list[bytes], bytes, list[bytes], str]:
        async with running_front() as (port, metrics, counters):
            answers = [await exchange(port, m, timeout=5) for m in malformed]
            routed = await exchange(port, connect, timeout=5)
            on_metrics = [await exchange(metrics, malformed[1], timeout=5),
                          await exchange(metrics, b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                                         timeout=5),
                          await exchange(metrics, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                                         timeout=5)]
            return answers, routed, on_metrics, counters.text()

    answers, routed, on_metrics, text = asyncio.run(run())
    assert all(a.startswith(b"HTTP/1.0 400") for a in answers + on_metrics[:1]), [a[:60] for a in answers]
    assert routed.startswith(b"HTTP/1.1 404") and b"CONNECT" in routed, routed[:300]
    assert on_metrics[1].startswith(b"HTTP/1.1 404") and b"POST /metrics is not served" in on_metrics[1], \
        on_metrics[1][:300]
    assert on_metrics[2].startswith(b"HTTP/1.1 200") and on_metrics[2].endswith(b"\r\n\r\n"), on_metrics[2][-200:]
    for line in ('protocol="http",reason="syntax"} 4', 'protocol="http",reason="route"} 1',
                 'protocol="metrics",reason="syntax"} 1', 'protocol="metrics",reason="route"} 1'):
        assert f"videoitg_front_rejected{{{line}" in text, text
    assert not [r for r in caplog.records if r.name.startswith("aiohttp")], caplog.text[-2000:]


class Upload:
    """An aiohttp StreamReader as an abandoned upload shows it: chunks, then the connection lost (each chunk waited
    for: never a body all in hand)."""

    def __init__(self, chunks: int, size: int, end: BaseException | None):
        self.left, self.size, self.end = chunks, size, end

    def is_eof(self) -> bool:
        return False

    async def readany(self) -> bytes:
        if self.left:
            self.left -= 1
            return b"\0" * self.size
        if self.end is not None:
            raise self.end
        return b""


async def read_all(reader: front.BodyReader) -> int:
    """Reads the body to its end or its refusal, keeping nothing: how many bytes came."""
    n = 0
    while chunk := await reader.chunk():
        n += len(chunk)
    return n


def without_gc(main: Coroutine[Any, Any, T]) -> T:
    """`main` run with garbage collection off and tracemalloc on: what it measures as held is what references
    keep alive, not what a collection has yet to free."""
    gc.disable()
    tracemalloc.start()
    try:
        return asyncio.run(main)
    finally:
        tracemalloc.stop()
        gc.enable()


def test_an_abandoned_upload_is_released_at_once() -> None:
    """64 MiB sent, then the connection closed: the reader keeps nothing, not even the exception the request's
    stream keeps (its traceback held the buffer until a garbage collection), and gives its bytes back."""
    budget = front.ByteBudget(1 << 30)
    lost = ConnectionResetError("Connection lost")  # the stream keeps and re-raises this very object

    async def run() -> tuple[front.BodyReader, int]:
        reader = front.BodyReader(Upload(64, 1 << 20, lost), 256 << 20, budget)
        await read_all(reader)
        held = tracemalloc.get_traced_memory()[0]
        reader.release()
        return reader, held

    reader, held = without_gc(run())
    assert reader.refusal is not None and reader.refusal.reason == "abandoned"
    assert lost.__traceback__ is None
    assert held < 8 << 20, f"{held >> 20} MiB still held"
    assert budget.held == 0


def test_http_body_bytes_all_come_back_whatever_clients_send(budgets: list[front.ByteBudget]) -> None:
    """Seeded random clients on three connections (health checks; inference bodies sent whole, in part, past their
    length, chunked, over the bound, pipelined, with `Expect: 100-continue`; connections closed, half-closed or
    left waiting mid-body; garbage; tritonserver answering late, with errors, large answers or before reading the
    body): the budget never holds more than its limit, holds nothing within 2 s of every
    client being gone (a body half-closed before its handler ran was held until the 10 s body timeout), and the
    front still answers."""
    import random


    def request(rng: random.Random) -> bytes:
        kind = rng.choice(("health", "whole", "whole", "part", "part", "over", "chunked", "expect", "big", "junk"))
        if kind == "health":
            return b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"
        if kind == "junk":
            return rng.randbytes(rng.choice((10, 300)))
        size = rng.choice((0, 1000, 300_000, 1_400_000))
        if kind == "big":
            size = 3 << 20  # over max_request_bytes: refused from its Content-Length
        extra = [f"Inference-Header-Content-Length: {len(VIDEO_HEADER)}"]
        if kind == "expect":
            extra.append("Expect: 100-continue")
        body = VIDEO_HEADER + b"v" * size
        if kind == "chunked":
            head = (f"POST /v2/models/{TOP}/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                    f"{extra[0]}\r\n\r\n").encode()
            cut = rng.randrange(len(body) + 1)
            return head + b"%x\r\n" % len(body) + body[:cut] + (b"\r\n0\r\n\r\n" if cut == len(body) else b"")
        head = infer_head(len(body), *extra)
        if kind == "part":
            return head + body[:rng.randrange(len(body) + 1)]
        if kind == "over":
            return head + body + b"w" * rng.choice((1, 5000))
        return head + body if kind != "big" else head

    async def step(rng: random.Random, conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]],
                   port: int) -> None:
        i = rng.randrange(len(conns))
        reader, writer = conns[i]
        action = rng.choice(("send", "send", "send", "pipeline", "read", "close", "half-close", "pause"))
        try:
            if action in ("send", "pipeline"):
                writer.write(request(rng) + (request(rng) if action == "pipeline" else b""))
                await writer.drain()
            elif action == "read":
                await asyncio.wait_for(reader.read(1 << 16), rng.choice((0.01, 0.1)))
            elif action == "half-close":
                writer.write_eof()
            elif action == "pause":
                await asyncio.sleep(rng.choice((0.001, 0.02)))
            if action in ("close", "half-close") or reader.at_eof() or writer.is_closing():
                if action == "close":
                    writer.transport.abort()
                conns[i] = await asyncio.open_connection("127.0.0.1", port)
        except (OSError, asyncio.TimeoutError):  # the front closed the connection first
            writer.transport.abort()
            conns[i] = await asyncio.open_connection("127.0.0.1", port)

    async def varied(request: web.Request) -> web.StreamResponse:
        """tritonserver as it may answer: at once, late, with an error, a large answer, or before reading the body."""
        rng = random.Random(request.headers.get("Content-Length", "0"))
        kind = rng.choice(("echo", "echo", "late", "error", "large", "early"))
        if kind == "early":
            return web.json_response({"error": "refused before the body was read"}, status=400)
        if kind == "late":
            await asyncio.sleep(0.02)
        await request.read()
        if kind == "error":
            return web.json_response({"error": "e" * 5000}, status=500)
        return web.Response(body=b"a" * (1 << 20) if kind == "large" else b"{}", content_type="application/json")

    async def run() -> tuple[list[str], int, int, bytes]:
        limit = 3 << 20
        faults: list[str] = []
        async with running_front(varied, max_request_bytes=2 << 20, held_bytes=limit) as (port, _, _):
            budget = budgets[-1]
            for seed in range(16):
                rng = random.Random(seed)
                conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
                for n in range(25):
                    await step(rng, conns, port)
                    if budget.held > limit:
                        faults.append(f"seed {seed} step {n}: budget {budget.held} over {limit}")
                for _, writer in conns:
                    writer.transport.abort()
            await settled(lambda: budget.held == 0, 2)  # the body timeout is 10 s: none waited it out
            answer = await exchange(port, infer_head(len(BODY)) + BODY, eof=True)
            return faults, budget.held, budget.high, answer

    faults, after, high, answer = asyncio.run(run())
    assert not faults, faults[:5]
    assert after == 0, after
    assert high > 1 << 20, high  # bodies were held at once: the seeds reach the budget's interesting states
    assert status(answer) in (200, 400, 500), answer[:200]


def test_a_bodys_bytes_are_taken_from_the_budget_until_released() -> None:
    async def run(chunks: int, budget: front.ByteBudget) -> front.BodyReader:
        reader = front.BodyReader(Upload(chunks, 1 << 20, None), 8 << 20, budget)
        await read_all(reader)
        return reader

    budget = front.ByteBudget(10 << 20)
    whole = asyncio.run(run(4, budget))
    assert whole.refusal is None and whole.received == 4 << 20 and budget.held == 4 << 20
    whole.release()
    over = asyncio.run(run(9, budget))
    assert over.refusal is not None and over.refusal.reason == "too_large" and budget.held == 8 << 20
    over.release()
    small = front.ByteBudget(2 << 20)
    busy = asyncio.run(run(4, small))
    assert busy.refusal is not None and busy.refusal.reason == "overloaded"
    busy.release()
    assert budget.held == 0 and small.held == 0


class Trickle:
    """An aiohttp StreamReader fed `size` bytes every `every_s` seconds, for as long as it is read."""

    def __init__(self, size: int, every_s: float):
        self.size, self.every_s = size, every_s

    def is_eof(self) -> bool:
        return False

    async def readany(self) -> bytes:
        await asyncio.sleep(self.every_s)
        return b"\0" * self.size


def test_a_body_must_keep_pace_counting_only_the_time_spent_waiting_for_its_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.1 s (a trickle, however long the body it declared) is refused once its wait passes the grace
    plus what its bytes earned; 64 KiB every 0.1 s (0.6 MiB/s against a 1 MiB/s floor) too, later. The front's own
    pauses between reads (tritonserver taking the body slowly) are not the client's: 1.6 s of them, more than the
    0.5 s grace and the 0.5 s 512 KiB earn, and the body is taken."""
    monkeypatch.setattr(front, "BODY_GRACE_S", 0.5)

    async def run(stream: Any, pause_s: float = 0.0) -> tuple[front.Refusal | None, int, float]:
        reader = front.BodyReader(stream, 1 << 30, front.ByteBudget(1 << 30), idle_s=5.0)
        t0 = time.monotonic()
        while await reader.chunk():
            await asyncio.sleep(pause_s)
            if reader.received >= 4 << 20:
                break
        reader.release()
        return reader.refusal, reader.received, time.monotonic() - t0

    refusal, received, took = asyncio.run(run(Trickle(1, 0.1)))
    assert refusal is not None and "slower than 1 MiB/s" in refusal and refusal.reason == "body_timeout"
    assert 0.4 < took < 1.5 and received < 10, (took, received)
    refusal, received, took = asyncio.run(run(Trickle(64 << 10, 0.1)))
    assert refusal is not None and "slower than" in refusal and 0.5 < took < 5, (refusal, took)
    refusal, received, took = asyncio.run(run(Upload(8, 64 << 10, None), pause_s=0.2))  # 512 KiB earn 0.5 s
    assert refusal is None and received == 512 << 10 and took > 1.5, (refusal, received, took)


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


def test_a_half_close_before_the_bodys_handler_ran_is_an_abandon_too(budgets: list[front.ByteBudget]) -> None:
    """Part of a small body, then a half-close, in two writes one after the other: aiohttp has parsed the request but
    its handler has not run when the end of the client's sending is read. That body was held until the body timeout
    (10 s, counted `body_timeout`, the budget holding its bytes meanwhile); it is abandoned at once."""
    body = VIDEO_HEADER + b"v" * 1000

    async def run() -> tuple[list[bytes], int, dict]:
        async with running_front(body_idle_s=30) as (port, _, counters):
            answers = []
            for _ in range(2):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                head = infer_head(len(body), f"Inference-Header-Content-Length: {len(VIDEO_HEADER)}")
                writer.write(head + body[:700])
                await writer.drain()
                writer.write_eof()
                answers.append(await asyncio.wait_for(reader.read(), 10))
                writer.close()
            return answers, budgets[-1].held, dict(counters.rejected)

    answers, held, rejected = asyncio.run(run())
    assert all(status(a) == 400 and b"before the body was sent" in a for a in answers), [a[:200] for a in answers]
    assert held == 0 and rejected == {("http", "abandoned"): 2}, (held, rejected)


def test_a_body_passed_on_while_it_arrives_goes_in_coalesced_pieces_and_stops_on_a_refusal() -> None:
    """A client's many small writes reach tritonserver as few large ones (Triton 2.51 is hurt by bodies in many
    small pieces), byte for byte; a client that goes away in the middle ends the stream with its refusal."""

    async def run(end: BaseException | None) -> tuple[list[int], front.Refusal | None, int]:
        budget = front.ByteBudget(1 << 30)
        reader = front.BodyReader(Upload(300, 1000, end), 1 << 20, budget)
        sizes: list[int] = []
        try:
            async for piece in front.stream_body([b"0123456789"], reader):
                sizes.append(len(piece))
        except front.BodyRefused:
            pass
        held = budget.held
        reader.release()
        return sizes, reader.refusal, held - budget.held

    sizes, refusal, taken = asyncio.run(run(None))
    assert refusal is None and sum(sizes) == 300_010 and taken == 300_000
    assert all(s >= front.FORWARD_BYTES for s in sizes[:-1]) and len(sizes) == 300_010 // front.FORWARD_BYTES + 1
    sizes, refusal, _ = asyncio.run(run(ConnectionResetError("Connection lost")))
    assert refusal is not None and refusal.reason == "abandoned" and sum(sizes) < 300_010


def test_a_large_body_reaches_tritonserver_while_it_arrives_and_a_refused_one_not_at_all() -> None:
    """The JSON header is checked first; then tritonserver gets the body as it comes, with its Content-Length and
    byte for byte (the client sends its second half only once tritonserver has seen the first: a front that held the
    whole body first would never answer). A body whose header is refused sends tritonserver nothing."""
    header = json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1],
                                     "parameters": {"binary_data_size": 4 + (2 << 20)}}]}).encode()
    half = 1 << 20
    first_seen = asyncio.Event()
    seen: list[tuple[str, int, str]] = []

    async def upstream(request: web.Request) -> web.Response:
        got = bytearray()
        while chunk := await request.content.readany():
            got += chunk
            if len(got) > len(header) + 4:
                first_seen.set()
        seen.append((request.headers.get("Content-Length", ""), len(got), hashlib.sha256(got).hexdigest()))
        return web.json_response({})

    def head(length: int) -> bytes:
        return infer_head(length, f"Inference-Header-Content-Length: {len(header)}")

    payload = header + (2 * half).to_bytes(4, "little") + bytes(range(256)) * (2 * half // 256)

    async def run() -> tuple[bytes, bytes]:
        async with running_front(upstream, max_request_bytes=8 << 20) as (port, _, _):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head(len(payload)) + payload[:len(header) + 4 + half])
            await asyncio.wait_for(first_seen.wait(), 10)
            writer.write(payload[len(header) + 4 + half:])
            answer = await asyncio.wait_for(reader.read(1 << 16), 10)
            writer.close()
            bad = b'{"inputs": 5}'.ljust(len(header))
            refused = await exchange(port, head(len(payload)) + bad + payload[len(header):])
            return answer, refused

    answer, refused = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert seen == [(str(len(payload)), len(payload), hashlib.sha256(payload).hexdigest())], seen
    assert refused.startswith(b"HTTP/1.1 400") and b"inputs" in refused and len(seen) == 1, refused[:200]


def test_a_client_stalling_in_the_middle_of_a_passed_on_body_is_its_own_fault() -> None:
    """The client stops sending half-way: it gets 408, counted as its fault (rejected, body_timeout), not as
    tritonserver unavailable; tritonserver saw a request that never completed."""
    header = BODY
    completed: list[int] = []

    async def upstream(request: web.Request) -> web.Response:
        completed.append(len(await request.read()))
        return web.json_response({})

    async def run() -> tuple[bytes, front.FrontCounters]:
        async with running_front(upstream, body_idle_s=1) as (port, _, counters):
            answer = await exchange(port, infer_head(len(header) + (1 << 20), f"Inference-Header-Content-Length: "
                                                     f"{len(header)}") + header + b"x" * (256 << 10), timeout=10)
            return answer, counters

    answer, counters = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert counters.rejected == {("http", "body_timeout"): 1} and not counters.unavailable, counters.text()
    assert completed == [], completed


def test_a_complete_large_body_then_a_half_close_is_answered() -> None:
    """A body passed on as it arrives: a client that sent all of it and then shut its side still gets the answer."""
    body = VIDEO_HEADER + b"v" * (2 << 20)

    async def run() -> bytes:
        async with running_front(max_request_bytes=8 << 20) as (port, _, _):
            return await exchange(port, infer_head(len(body), f"Inference-Header-Content-Length: {len(VIDEO_HEADER)}")
                                  + body, eof=True)

    answer = asyncio.run(run())
    assert answer.startswith(b"HTTP/1.1 200") and b'"body_bytes": %d' % len(body) in answer, answer[:300]


@asynccontextmanager
async def grpc_front(methods: dict[str, Callable[..., Awaitable[bytes]]] | None = None,
                     **kw: Any) -> AsyncIterator[tuple[str, front.FrontCounters, Any]]:
    """(the front's gRPC address, its counters, its GrpcPort), in front of a stand-in for tritonserver whose
    `methods` (raw bytes both ways; by default ServerLive, answered live) answer."""
    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2

    from videoitg.serving.ports import free_ports

    async def live(raw: bytes, context: Any) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    up_port, port = free_ports(2)
    upstream = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    upstream.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(front.SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in (methods or {"ServerLive": live}).items()}),))
    upstream.add_insecure_port(f"127.0.0.1:{up_port}")
    cfg = front.FrontConfig(**{"host": "127.0.0.1", "http_port": 0, "grpc_port": port, "metrics_port": 0,
                               "triton_http": "", "triton_grpc": f"127.0.0.1:{up_port}", "triton_metrics": "",
                               "models": (TOP,), "max_request_bytes": 64 << 10, **kw})
    from videoitg.serving.front_grpc import GrpcPort

    counters = front.FrontCounters()
    server = GrpcPort(cfg, counters, front.held_budget(cfg))
    await upstream.start()
    await server.start()
    try:
        yield f"127.0.0.1:{port}", counters, server
    finally:
        await server.stop(0)
        await upstream.stop(0)


async def outcome(call: Awaitable[Any], timeout: float = 10) -> str:
    """'OK', the gRPC status code's name and text the call ended with, or 'open' (then cancelled) after `timeout`."""
    import grpc

    try:
        await asyncio.wait_for(call, timeout)
        return "OK"
    except grpc.aio.AioRpcError as e:
        return f"{e.code().name}: {e.details()}"
    except asyncio.TimeoutError:
        return "open"


async def never() -> AsyncIterator[bytes]:
    """A request stream that sends its headers and then nothing."""
    await asyncio.sleep(3600)
    yield b""


LIVE = f"/{front.SERVICE}/ServerLive"


async def raw_frames(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """The frames a peer sends, parsed one by one (hyperframe), with no HTTP/2 state of the reader's own."""
    from hyperframe.frame import Frame

    buf = b""
    while True:
        while len(buf) < 9 or len(buf) < 9 + int.from_bytes(buf[:3], "big"):
            if not (data := await reader.read(1 << 16)):
                return
            buf += data
        frame, n = Frame.parse_frame_header(memoryview(buf[:9]))
        frame.parse_body(memoryview(buf[9:9 + n]))
        buf = buf[9 + n:]
        yield frame


def test_a_stop_takes_the_calls_a_client_sent_before_it_read_the_goaway() -> None:
    """At a stop, a client may have sent a call before it read the GOAWAY (a grpcio client then fails the call with
    "Stream removed"). The first GOAWAY names the largest stream id and comes with a PING, so such a call is still
    taken and answered; the client's answer to the PING brings the GOAWAY naming the last call taken."""
    import h2.config
    import h2.connection
    from hpack import Decoder
    from hyperframe.frame import GoAwayFrame, HeadersFrame, PingFrame

    from videoitg.serving import front_grpc

    async def run() -> tuple[list[int], list[tuple[int, dict[str, str]]], float]:
        async with grpc_front() as (target, _, port):
            host, p = target.rsplit(":", 1)
            reader, writer = await asyncio.open_connection(host, int(p))
            client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            client.initiate_connection()
            writer.write(client.data_to_send())
            sid = client.get_next_available_stream_id()
            client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", LIVE),
                                      ("content-type", "application/grpc"), ("te", "trailers")])
            client.send_data(sid, prefix(0), end_stream=True)
            call = client.data_to_send()  # made before the stop, written after its first GOAWAY is read
            t0 = time.monotonic()
            stop = asyncio.ensure_future(port.stop(5.0))
            goaways: list[int] = []
            headers: list[tuple[int, dict[str, str]]] = []
            decoder = Decoder()
            async for frame in raw_frames(reader):
                if isinstance(frame, GoAwayFrame):
                    goaways.append(frame.last_stream_id)
                elif isinstance(frame, PingFrame) and "ACK" not in frame.flags:
                    writer.write(call + PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]).serialize())
                elif isinstance(frame, HeadersFrame):
                    headers.append((frame.stream_id, {k.decode(): v.decode() for k, v in decoder.decode(frame.data,
                                                                                                         raw=True)}))
            await asyncio.wait_for(stop, 10)  # the frames end when the stop closes the connection
            writer.close()
            return goaways, headers, time.monotonic() - t0

    goaways, headers, took = asyncio.run(run())
    assert goaways == [2**31 - 1, 1], goaways
    assert [sid for sid, _ in headers] == [1, 1] and headers[1][1].get("grpc-status") == "0", headers
    assert took < front_grpc.DRAIN_S, took  # the PING's answer ended the wait for calls sent before the GOAWAY


def test_a_stop_answers_or_refuses_every_call_whatever_is_in_flight() -> None:
    """Seeded runs of grpcio clients calling at random moments while tritonserver takes up to 0.3 s, a stop (2 s of
    grace) coming among them: every call is answered (OK) or refused as retryable (UNAVAILABLE), none is lost in
    between ("Stream removed", CANCELLED, INTERNAL), and nothing stays held or counted as being answered."""
    import random

    grpc = pytest.importorskip("grpc")

    async def delayed(message: bytes, context: Any) -> bytes:
        await asyncio.sleep(random.Random(message).choice((0, 0.01, 0.1, 0.3)))
        return b""

    async def run(seed: int) -> tuple[list[str], int, int]:
        rng = random.Random(seed)
        async with grpc_front({"ServerLive": delayed}) as (target, _, port):
            channels = [grpc.aio.insecure_channel(target) for _ in range(2)]
            calls = [c.unary_unary(LIVE) for c in channels]
            for c in calls:
                await c(b"")  # connected before the run
            outcomes, stop = [], None
            for _ in range(rng.randint(10, 40)):
                if stop is None and rng.random() < 0.15:
                    stop = asyncio.ensure_future(port.stop(2.0))
                message = b"%d" % rng.randrange(1 << 30)
                outcomes.append(asyncio.ensure_future(outcome(rng.choice(calls)(message), 10)))
                await asyncio.sleep(rng.choice((0, 0, 0.005, 0.05)))
            if stop is None:
                stop = asyncio.ensure_future(port.stop(2.0))
            await asyncio.wait_for(stop, 10)
            got = list(await asyncio.gather(*outcomes))
            for c in channels:
                await c.close()
            return got, port.budget.held, port.busy

    for seed in range(4):
        got, held, busy = asyncio.run(run(seed))
        lost = [o for o in got if o != "OK" and not o.startswith("UNAVAILABLE")]
        assert not lost and held == 0 and busy == 0, (seed, lost[:5], held, busy)


def test_a_refused_grpc_message_is_not_kept_after_its_answer() -> None:
    """An 8 MiB ModelInfer refused by tritonserver (here a stand-in that refuses every one), and one refused by the
    front's own checks: once each is answered, the front holds neither message. The abort's traceback held the
    handler's frame, and so the message, until a garbage collection."""
    grpc = pytest.importorskip("grpc")
    from tritonclient.grpc import service_pb2

    size = 8 << 20

    def request(shape: list[int]) -> bytes:
        req = service_pb2.ModelInferRequest(model_name=TOP)
        req.inputs.add(name="VIDEO", datatype="BYTES", shape=shape)
        req.raw_input_contents.append(b"\0" * size)
        return req.SerializeToString()

    async def refuse(raw: bytes, context: Any) -> bytes:
        del raw  # what the front must do too: the abort's traceback holds this frame
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "NotAVideoError: not a video")

    async def run() -> tuple[list[str], int]:
        answers = []
        async with grpc_front({"ModelInfer": refuse}, max_request_bytes=64 << 20) as (target, _, _), \
                grpc.aio.insecure_channel(target, options=[("grpc.max_send_message_length", -1)]) as channel:
            call = channel.unary_unary(f"/{front.SERVICE}/ModelInfer")
            base = tracemalloc.get_traced_memory()[0]
            for shape in ([1, 1], [1, -1]):  # refused by the stand-in; by the front (a negative dimension)
                message = request(shape)
                try:
                    await call(message, timeout=10)
                except grpc.aio.AioRpcError as e:
                    answers.append(e.details())
                    e.__traceback__ = None  # the client's own call keeps no message either
                del message
            held = tracemalloc.get_traced_memory()[0] - base
        return answers, held

    answers, held = without_gc(run())
    assert "NotAVideoError" in answers[0] and "negative dimension" in answers[1], answers
    assert held < size // 2, f"{held >> 20} MiB still held after both answers"




def test_a_message_split_anywhere_across_data_frames_is_passed_on_byte_for_byte() -> None:
    """A ModelInfer whose prefix and message arrive in DATA frames of 1, 2 and 4 bytes and then larger ones reaches
    tritonserver unchanged; one with a byte past its length, in the frame that completes it, is refused."""
    from tritonclient.grpc import service_pb2

    req = service_pb2.ModelInferRequest(model_name=TOP)
    req.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    req.raw_input_contents.append(hashlib.sha256(b"video").digest() * 4096)  # 128 KiB
    raw = req.SerializeToString()
    got: list[bytes] = []

    async def infer(message: bytes, context: Any) -> bytes:
        got.append(message)
        return service_pb2.ModelInferResponse(model_name=TOP).SerializeToString()

    async def run() -> tuple[tuple[str, str], tuple[str, str]]:
        async with grpc_front({"ModelInfer": infer}, max_request_bytes=1 << 20) as (target, _, _):
            client = await H2Client().connect(target)
            answers = []
            for extra in (b"", b"x"):
                sid, whole = client.open(), prefix(len(raw)) + raw + extra
                cuts = [0, 1, 3, 7, 50_000, len(whole)]
                for a, b in itertools.pairwise(cuts):
                    await client.send(sid, whole[a:b], end=b == len(whole))
                answers.append(await client.status(sid))
            await client.close()
            return answers[0], answers[1]

    whole, over = asyncio.run(run())
    assert whole == ("0", "") and got == [raw], (whole, [len(g) for g in got])
    assert over[0] == "3" and "exactly one request message" in over[1], over


def test_grpc_message_bytes_are_held_within_the_front_budget_and_released() -> None:
    """Streams that declare large messages, send part and wait: a message's buffer is taken from the front's budget
    (shared with HTTP) before it grows, to at most twice what arrived; a stream whose buffer does not fit is refused
    (RESOURCE_EXHAUSTED, `overloaded`), and what was held goes back when the client goes. grpcio's own server held
    every partial message whole, with no bound."""
    sent = 200_000

    async def run() -> tuple[list[int], list[tuple[str, str]], tuple[str, str], int, front.FrontCounters]:
        async with grpc_front(max_request_bytes=1 << 20, held_bytes=1 << 20) as (target, counters, port):
            client = await H2Client().connect(target)
            held, sids = [0], []
            while len(sids) < 8 and "grpc-status" not in client.trailers.get(sids[-1] if sids else 0, {}):
                sids.append(client.open())
                await client.send(sids[-1], prefix(1000_000) + b"v" * sent)
                await settled(lambda: port.budget.held - held[-1] >= sent  # room for all it sent, or refused
                              or "grpc-status" in client.trailers.get(sids[-1], {}), 10)
                held.append(port.budget.held)
            answers = [await client.status(sid, 0.2) for sid in sids]
            own = await H2Client().connect(target)  # an ordinary call still fits beside those held
            live = own.open("ServerLive")
            await own.send(live, prefix(0), end=True)
            answered = await own.status(live)
            await client.close()
            await own.close()
            await asyncio.sleep(0.3)
            return held, answers, answered, port.budget.held, counters

    held, answers, answered, after, counters = asyncio.run(run())
    kept = len(answers) - 1  # every stream but the last is held
    assert kept >= 2 and answers[:kept] == [("open", "")] * kept, answers
    assert answers[-1][0] == "8" and "too many request bodies" in answers[-1][1], answers
    assert all(sent <= b - a <= 2 * sent for a, b in itertools.pairwise(held[:kept + 1])), held
    assert max(held) <= 1 << 20, held
    assert answered == ("0", ""), answered
    assert after == 0 and counters.rejected == {("grpc", "overloaded"): 1}, (after, counters.rejected)


def test_a_whole_grpc_message_is_held_at_its_exact_size_until_answered() -> None:
    """A message that arrived in several DATA frames is handed over as its buffer, which is then exactly the message:
    its size is what stays taken from the budget while it is answered, and nothing once it is."""
    body = hashlib.sha256(b"message").digest() * (450_000 // 32)  # 450 KB: 7 DATA frames of at most 64 KiB
    arrived, answer = asyncio.Event(), asyncio.Event()
    got: list[bytes] = []

    async def slow(message: bytes, context: Any) -> bytes:
        got.append(message)
        arrived.set()
        await answer.wait()
        return b""

    async def run() -> tuple[int, tuple[str, str], int]:
        async with grpc_front({"ServerLive": slow}, max_request_bytes=1 << 20) as (target, _, port):
            client = await H2Client().connect(target)
            sid = client.open("ServerLive")
            await client.send(sid, prefix(len(body)) + body, end=True)
            await asyncio.wait_for(arrived.wait(), 10)
            while_answered = port.budget.held
            answer.set()
            answered = await client.status(sid)
            await client.close()
            await settled(lambda: port.budget.held == 0, 2)
            return while_answered, answered, port.budget.held

    while_answered, answered, after = asyncio.run(run())
    assert while_answered == len(body), while_answered
    assert answered == ("0", "") and got == [body], (answered, [len(g) for g in got])
    assert after == 0, after


def test_a_call_cancelled_in_the_bytes_that_complete_it_is_not_counted_as_answered() -> None:
    """A whole message and the call's RST_STREAM in one write: the front starts the call's answer and cancels it
    before it has run. Counted as being answered for ever, such calls would soon have every later call refused
    `overloaded` (at most `max_connections` are answered at once)."""

    async def run() -> tuple[int, tuple[str, str], dict]:
        async with grpc_front(max_connections=2) as (target, counters, port):
            client = await H2Client().connect(target)
            for _ in range(2):
                sid = client.open("ServerLive")
                client.h2.send_data(sid, prefix(0), end_stream=True)
                client.h2.reset_stream(sid)
                client.flush()
            await settled(lambda: port.busy == 0 and any(c.h2.highest_inbound_stream_id == sid
                                                         for c in port.connections), 2)
            busy = port.busy
            sid = client.open("ServerLive")
            await client.send(sid, prefix(0), end=True)
            answered = await client.status(sid)
            await client.close()
            return busy, answered, dict(counters.rejected)

    busy, answered, rejected = asyncio.run(run())
    assert busy == 0 and answered == ("0", ""), (busy, answered, rejected)


def test_the_grpc_budget_is_what_open_calls_hold_whatever_clients_send() -> None:
    """Seeded random clients (calls opened on three connections, some with a short grpc-timeout; messages sent
    whole, in part, past their declared length or compressed; calls cancelled, connections dropped, PINGs and
    window settings; upstream answers delayed or failing): between any two steps the budget holds exactly the
    buffers of the calls still open, never more than its limit, and only open calls wait for their message; once
    every client is gone nothing is held and no call is counted as being answered. A buffer kept after its call
    ended, or released twice, breaks the first equality."""
    import random

    import h2.exceptions
    import h2.settings

    grpc = pytest.importorskip("grpc")

    async def live(message: bytes, context: Any) -> bytes:
        rng = random.Random(len(message))
        await asyncio.sleep(rng.choice((0, 0, 0.002, 0.02)))
        if rng.random() < 0.2:  # tritonserver's own error, its text long
            await context.abort(rng.choice(list(grpc.StatusCode)[1:]), "e" * 5000)
        return message[:64] if rng.random() < 0.8 else b"a" * 200_000  # an answer of several frames

    def held_by_calls(port: Any) -> int:
        return sum(call.taken for conn in port.connections for call in conn.calls.values())

    def waiting_not_open(port: Any) -> int:
        open_calls = {id(call) for conn in port.connections for call in conn.calls.values()}
        return sum(id(call) not in open_calls for call in port.waiting.calls)

    async def step(rng: random.Random, clients: list[H2Client], target: str) -> None:
        i = rng.randrange(len(clients))
        client, sids = clients[i], [s for s in clients[i].h2.streams if s % 2]
        action = rng.choice(("open", "open", "send", "send", "send", "reset", "drop", "pause", "ping", "settings"))
        try:
            if action == "ping":
                client.h2.ping(rng.randbytes(8))
                client.flush()
            elif action == "settings":
                window = rng.choice((1, 65535, 1 << 20))
                client.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
                client.flush()
            elif action == "open" or not sids:
                timeout = {"grpc-timeout": rng.choice(("1m", "10m"))} if rng.random() < 0.2 else {}
                sid = client.open(rng.choice(("ServerLive", "ServerLive", "ModelInfer", "ServerMetadata")), **timeout)
                declared = rng.choice((0, 100, 40_000, 300_000, 900_000))
                body = min(declared, rng.choice((0, 50, declared, declared)))
                await client.send(sid, prefix(declared, compressed=rng.random() < 0.05) + b"m" * body,
                                  end=rng.random() < (0.8 if body == declared else 0.2))
            elif action == "send":
                await client.send(rng.choice(sids), b"n" * rng.choice((1, 1000, 70_000, 300_000)),
                                  end=rng.random() < 0.4)
            elif action == "reset":
                client.h2.reset_stream(rng.choice(sids))
                client.flush()
            elif action == "drop":
                await client.close()
                clients[i] = await H2Client(acknowledge=rng.random() < 0.7).connect(target)
            else:
                await asyncio.sleep(rng.choice((0.001, 0.01, 0.05)))
        except (h2.exceptions.ProtocolError, OSError, asyncio.TimeoutError):
            pass  # the front ended the stream or the connection first: what clients see, not a failure

    async def run() -> tuple[list[str], int, int, int]:
        limit = 1_500_000  # under two of the largest messages: some calls are refused `overloaded`
        faults: list[str] = []
        async with grpc_front({"ServerLive": live, "ServerMetadata": live}, max_request_bytes=1 << 20,
                              held_bytes=limit) as (target, _, port):
            for seed in range(24):
                rng = random.Random(seed)
                clients = [await H2Client(acknowledge=rng.random() < 0.7).connect(target) for _ in range(3)]
                for n in range(30):
                    await step(rng, clients, target)
                    await asyncio.sleep(0)
                    if port.budget.held != held_by_calls(port) or port.budget.held > limit or waiting_not_open(port):
                        faults.append(f"seed {seed} step {n}: budget {port.budget.held}, calls hold "
                                      f"{held_by_calls(port)}, limit {limit}; {waiting_not_open(port)} calls "
                                      "waiting that are not open")
                for client in clients:
                    await client.close()
            gone = await settled(lambda: not port.connections and port.busy == 0, 10)
            return faults, port.budget.held, len(port.waiting.calls), int(not gone)

    faults, after, waiting, open_left = asyncio.run(run())
    assert not faults, faults[:5]
    assert (after, waiting, open_left) == (0, 0, 0), (after, waiting, open_left)


def test_a_grpc_message_that_stops_arriving_or_trickles_is_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that sends its headers and then nothing, or part of its message and then nothing, ends once no byte
    came for `body_idle_s`; one that keeps sending a byte at a time, declaring a 64 MiB message, once it falls
    behind MIN_BODY_RATE by more than BODY_GRACE_S (DEADLINE_EXCEEDED, counted `body_timeout`), not 64 s on. A
    client calling all along on its own connection is answered every time."""
    monkeypatch.setattr(front, "BODY_GRACE_S", 1.0)

    async def run() -> tuple[list[tuple[str, str]], list[str], front.FrontCounters]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front(body_idle_s=0.3, max_request_bytes=64 << 20) as (target, counters, _):
            client = await H2Client().connect(target)
            silent, part, trickle = client.open(), client.open(), client.open()
            await client.send(part, prefix(100) + b"v" * 10)
            await client.send(trickle, prefix(64 << 20))
            t0, answers = time.monotonic(), []
            async with grpc.aio.insecure_channel(target) as channel:
                call = channel.unary_unary(LIVE)
                while time.monotonic() - t0 < 2.5:
                    answers.append(await outcome(call(b"")))
                    if "grpc-status" not in client.trailers.get(trickle, {}):
                        await client.send(trickle, b"v")
                    await asyncio.sleep(0.05)
            ended = [await client.status(sid, 0.1) for sid in (silent, part, trickle)]
            await client.close()
            return ended, answers, counters

    ended, answers, counters = asyncio.run(run())
    assert [e[0] for e in ended] == ["4"] * 3, ended
    assert "stalled" in ended[0][1] and "stalled" in ended[1][1] and "slower than" in ended[2][1], ended
    assert len(answers) > 10 and set(answers) == {"OK"}, answers
    assert counters.rejected == {("grpc", "body_timeout"): 3}, counters.rejected


@pytest.mark.parametrize("flood", ["ping", "reset", "window"])
def test_a_connection_flooding_frames_that_carry_nothing_is_told_to_calm_down(flood: str) -> None:
    """5000 PINGs, WINDOW_UPDATEs, or calls opened and reset at once (a rapid reset), in one write: the front works
    through them a batch of frames per turn of its loop, so a client calling meanwhile is answered, then ends the
    flooding connection (GOAWAY ENHANCE_YOUR_CALM, counted `flood`) with nothing of its calls left behind."""
    from videoitg.serving import front_grpc

    async def run() -> tuple[int | None, list[str], front.FrontCounters, int, int]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front() as (target, counters, port), grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(LIVE)
            assert await outcome(call(b"")) == "OK"
            client = await H2Client().connect(target)
            for i in range(5000):
                if flood == "ping":
                    client.h2.ping(i.to_bytes(8, "big"))
                elif flood == "window":
                    client.h2.increment_flow_control_window(1)
                else:
                    client.h2.reset_stream(client.open("ServerLive"))
            client.flush()
            answers = [await outcome(call(b""), 5) for _ in range(20)]
            await asyncio.wait_for(client.task, 10)  # the front closes the connection
            return client.goaway, answers, counters, len(port.waiting.calls), port.budget.held

    goaway, answers, counters, waiting, held = asyncio.run(run())
    assert goaway == 11 and set(answers) == {"OK"}, (goaway, answers)  # 11: ENHANCE_YOUR_CALM
    assert counters.rejected == {("grpc", "flood"): 1} and waiting == 0 and held == 0, counters.rejected
    assert front_grpc.FLOOD_FRAMES < 5000


def test_a_data_frames_repr_names_its_length_without_reading_it() -> None:
    """h2 builds repr(frame) of every frame it receives; front_grpc makes a DATA frame's cheap (hyperframe's
    serialized and hexlified the whole payload)."""
    from hyperframe.frame import DataFrame

    from videoitg.serving import front_grpc

    assert front_grpc.DataFrame is DataFrame and repr(DataFrame(1, data=b"v" * 65536)).endswith("data=<65536 bytes>")


def test_a_frame_over_the_size_bound_ends_the_connection_from_its_header() -> None:
    """A frame header announcing 16 MiB (the front allows 64 KiB): refused at once (GOAWAY FRAME_SIZE_ERROR, counted
    `syntax`), not waited for."""
    async def run() -> tuple[int | None, float, front.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            t0 = time.monotonic()
            client.writer.write(((16 << 20) - 1).to_bytes(3, "big") + b"\0\0\0\0\0\1" + b"v" * 1000)  # DATA, stream 1
            await asyncio.wait_for(client.task, 5)
            return client.goaway, time.monotonic() - t0, counters

    goaway, took, counters = asyncio.run(run())
    assert goaway == 6 and took < 2 and counters.rejected == {("grpc", "syntax"): 1}, (goaway, took, counters.rejected)


def test_a_header_block_is_bounded_before_it_is_decoded() -> None:
    """A HEADERS frame and CONTINUATION frames of 16 KiB each, never ending the block (h2 gathers up to 64 frames
    of the largest size before refusing): the front ends the connection once the block passes twice the metadata
    bound (GOAWAY ENHANCE_YOUR_CALM, counted `header_size`)."""
    from videoitg.serving import front_grpc

    def frame(kind: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([kind, 0]) + (1).to_bytes(4, "big") + payload

    async def run() -> tuple[int | None, front.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            block = b"\x00" * (16 << 10)
            client.writer.write(frame(0x1, block) + b"".join(frame(0x9, block) for _ in range(8)))
            await asyncio.wait_for(client.task, 5)
            return client.goaway, counters

    goaway, counters = asyncio.run(run())
    assert 9 * (16 << 10) > 2 * front_grpc.MAX_METADATA
    assert goaway == 11 and counters.rejected == {("grpc", "header_size"): 1}, (goaway, counters.rejected)


def test_a_client_that_reads_none_of_its_answers_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls whose answers (4 MiB each) the client never reads: once the front's writes back up for KEEPALIVE_S it
    stops reading the client and then drops the connection (a transport's close waits for its queue to be written:
    it would never end), with nothing of its calls left behind. A client that opens its windows to 0 instead gets
    its call cancelled after KEEPALIVE_S (counted `read_timeout`)."""
    import h2.config
    import h2.connection
    import h2.settings

    from videoitg.serving import front_grpc

    monkeypatch.setattr(front_grpc, "KEEPALIVE_S", 1.0)

    async def big(raw: bytes, context: Any) -> bytes:
        return b"a" * (4 << 20)

    async def run() -> tuple[int, int, int, tuple[str, str], front.FrontCounters]:
        async with grpc_front({"ServerLive": big}) as (target, counters, port):
            c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
            c.initiate_connection()
            c.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
            c.increment_flow_control_window(2**31 - 1 - 65535)
            for _ in range(16):
                sid = c.get_next_available_stream_id()
                c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"), (":path", LIVE),
                                     ("content-type", "application/grpc")])
                c.send_data(sid, prefix(0), end_stream=True)
            _, writer = await asyncio.open_connection(*target.rsplit(":", 1))
            writer.write(c.data_to_send())  # and never read
            zero = await H2Client().connect(target)
            zero.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 0})
            zero.flush()
            sid = zero.open("ServerLive")
            await zero.send(sid, prefix(0), end=True)
            status = await zero.status(sid, 5)
            await settled(lambda: len(port.connections) == 1, 10)
            writer.close()
            await zero.close()
            return len(port.connections), port.busy, port.budget.held, status, counters

    connections, busy, held, status, counters = asyncio.run(run())
    assert connections == 1 and busy == 0 and held == 0, (connections, busy, held)  # only `zero` is left
    # the zero-window call, and those of the 16 whose answers waited out KEEPALIVE_S before their connection went
    assert status[0] == "reset" and set(counters.rejected) == {("grpc", "read_timeout")}, (status, counters.rejected)
    assert 1 <= counters.rejected["grpc", "read_timeout"] <= 17, counters.rejected


def test_settings_frames_beyond_what_a_client_needs_end_the_connection() -> None:
    """h2 keeps every setting id it is sent and walks them all on each SETTINGS frame: one of 1000 settings is
    refused from its length (`flood`)."""
    async def run() -> tuple[int | None, front.FrontCounters]:
        async with grpc_front() as (target, counters, _):
            client = await H2Client().connect(target)
            payload = b"".join((0x100 + i).to_bytes(2, "big") + (1).to_bytes(4, "big") for i in range(1000))
            client.writer.write(len(payload).to_bytes(3, "big") + b"\x04\x00\x00\x00\x00\x00" + payload)
            await asyncio.wait_for(client.task, 5)
            return client.goaway, counters

    goaway, counters = asyncio.run(run())
    assert goaway == 11 and counters.rejected == {("grpc", "flood"): 1}, (goaway, counters.rejected)


def test_grpc_calls_refused_by_their_headers_or_message_prefix() -> None:
    """Refused before the message's bytes are kept: a length over the bound (at its prefix), a compressed message
    or encoding, a method the front does not serve, a call that is not gRPC; a connection past the port's cap is
    closed at once. Each counted by its reason."""
    async def run() -> tuple[dict[str, tuple[str, str]], bytes, front.FrontCounters]:
        grpc = pytest.importorskip("grpc")
        async with grpc_front(max_request_bytes=1 << 20, max_connections=2) as (target, counters, _):
            client = await H2Client().connect(target)
            answers = {}
            big = client.open()
            await client.send(big, prefix(2 << 20) + b"v" * 100)
            answers["too large"] = await client.status(big)
            flag = client.open()
            await client.send(flag, prefix(4, compressed=True) + b"abcd", end=True)
            answers["compressed flag"] = await client.status(flag)
            gzipped = client.open("ServerLive", **{"grpc-encoding": "gzip"})
            answers["grpc-encoding"] = await client.status(gzipped)
            admin = client.open("RepositoryModelLoad")
            answers["model load"] = await client.status(admin)
            async with grpc.aio.insecure_channel(target) as channel:  # the second connection
                answers["live"] = ("0", "") if await outcome(channel.unary_unary(LIVE)(b"")) == "OK" else ("?", "")
                third_reader, _ = await asyncio.open_connection(*target.rsplit(":", 1))
                third = await asyncio.wait_for(third_reader.read(), 5)
            await client.close()
            return answers, third, counters

    answers, third, counters = asyncio.run(run())
    assert answers["too large"][0] == "8" and "over the server's limit of 1048576" in answers["too large"][1], answers
    assert answers["compressed flag"][0] == answers["grpc-encoding"][0] == "12", answers
    assert answers["model load"][0] == "12" and "Method not found" in answers["model load"][1], answers
    assert answers["live"] == ("0", "") and third == b"", (answers, third)
    assert counters.rejected == {("grpc", "too_large"): 1, ("grpc", "encoding"): 2, ("grpc", "route"): 1,
                                 ("grpc", "connections"): 1}, counters.rejected


def test_a_grpc_call_waiting_for_its_message_is_displaced_by_a_newer_one() -> None:
    """With every waiting place taken by streams that sent their headers and then wait, a new call is answered: the
    stream waiting longest ends (RESOURCE_EXHAUSTED, counted as `stalled`). A call carries exactly one message."""

    grpc = pytest.importorskip("grpc")

    async def run() -> tuple[str, list[str], list[str], front.FrontCounters]:
        async with grpc_front(max_connections=4) as (target, counters, _), grpc.aio.insecure_channel(target) as channel:
            stalls = [channel.stream_unary(LIVE)(never()) for _ in range(4)]
            await asyncio.sleep(0.3)
            answered = await outcome(channel.unary_unary(LIVE)(b""))
            ended = [await outcome(stall, 0.5) for stall in stalls]

            async def messages(n: int) -> AsyncIterator[bytes]:
                for _ in range(n):
                    yield b""

            counts = [await outcome(channel.stream_unary(LIVE)(messages(n))) for n in (0, 2)]
        return answered, ended, counts, counters

    answered, ended, counts, counters = asyncio.run(run())
    assert answered == "OK", answered
    displaced = [e for e in ended if e.startswith("RESOURCE_EXHAUSTED")]
    assert len(displaced) == 1 and "had not arrived" in displaced[0] and ended.count("open") == 3, ended
    assert all("exactly one request message" in c for c in counts), counts
    # a cancel is a RST_STREAM, not counted; a call that ends its side with no message (or two) is
    assert counters.rejected == {("grpc", "stalled"): 1, ("grpc", "structure"): 2}, counters.rejected
