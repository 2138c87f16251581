"""The front's HTTP ports (http.py, connections.py) under hostile clients, in this process in front of a small
aiohttp stand-in for tritonserver's HTTP endpoint: timeouts, caps, held bytes, headers, `100 Continue`, a
half-close, its counters."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import time

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from aiohttp import web

from tests.support.front import BODY, VIDEO_HEADER, exchange, infer_head, running_front, status, upstream_echo
from tests.support.server import quickest_async, settled
from videoitg.contract.protocol import TOP
from videoitg.front import bounds, config, http, policy


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
    """Four silent connections fill the cap: a fifth takes the place of the one silent longest, and the other three
    (one of which sends half a header) are closed after keepalive_s."""
    async def run() -> tuple[list[bytes], bytes, float, bytes, str]:
        async with running_front(max_connections=4, keepalive_s=1.0) as (port, _, counters):
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(4)]
            await asyncio.sleep(0.1)
            over = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n", timeout=5)
            t0 = time.monotonic()  # the three never send a byte (one sends half a header): closed after keepalive_s
            idle[1][1].write(b"GET /v2/health/re")
            closed = [await asyncio.wait_for(r.read(), 10) for r, _ in idle]
            took = time.monotonic() - t0
            for _, w in idle:
                w.close()
            await asyncio.sleep(0.1)
            ok = await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return closed, over, took, ok, counters.text()

    closed, over, took, ok, text = asyncio.run(run())
    assert over.startswith(b"HTTP/1.1 200"), over
    assert 'videoitg_front_idle_closed{protocol="http"} 1' in text, text
    assert closed == [b""] * 4 and took < 4, (closed, took)
    assert ok.startswith(b"HTTP/1.1 200"), ok[:100]


def test_the_metrics_port_has_a_small_cap_of_its_own() -> None:
    """A crowd of silent connections fills the metrics port's `METRICS_CONNECTIONS` and takes none of the HTTP
    port's: a scrape past the cap takes the place of the one silent longest (counted as the metrics port's)."""
    hello = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    scrape = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

    async def run() -> tuple[bytes, bytes, bytes, str]:
        async with running_front(max_connections=4) as (port, metrics, counters):
            idle = [await asyncio.open_connection("127.0.0.1", metrics) for _ in range(config.METRICS_CONNECTIONS)]
            await asyncio.sleep(0.1)
            over = await exchange(metrics, scrape, timeout=5)
            ok = await exchange(port, hello)
            first = await asyncio.wait_for(idle[0][0].read(), 5)  # the one silent longest: closed, nothing sent
            for _, w in idle:
                w.close()
            return over, ok, first, counters.text()

    over, ok, first, text = asyncio.run(run())
    assert over.startswith(b"HTTP/1.1 200") and ok.startswith(b"HTTP/1.1 200"), (over[:100], ok[:100])
    assert first == b"", first
    assert 'videoitg_front_idle_closed{protocol="metrics"} 1' in text, text
    assert 'reason="connections"' not in text, text


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
            return await exchange(port, head + chunk * (policy.MAX_HEADER_BYTES // (64 << 10) + 2), timeout=10)

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


def test_http_body_bytes_all_come_back_whatever_clients_send(budgets: list[bounds.ByteBudget]) -> None:
    """Seeded random clients on three connections (health checks; inference bodies sent whole, in part, past their
    length, chunked, over the bound, pipelined, with `Expect: 100-continue`; connections closed, half-closed or
    left waiting mid-body; garbage; tritonserver answering late, with errors, large answers or before reading the
    body): the budget never holds more than its limit, holds nothing within 2 s of every client being gone (well
    before the 10 s body timeout, a body half-closed before its handler ran included), and the front still
    answers."""
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


def test_a_half_close_in_the_middle_of_a_body_releases_it_at_once(budgets: list[bounds.ByteBudget]) -> None:
    """A client that shuts its side before its body is complete has abandoned it: the connection closes and the
    budget gives its bytes back at once, not at the body timeout (a reconnecting client's next upload would come on
    top of them)."""

    async def run() -> tuple[bytes, float, int]:
        async with running_front(body_idle_s=30) as (port, _, _):
            t0 = time.monotonic()
            answer = await exchange(port, infer_head(1 << 20) + b"x" * (256 << 10), eof=True, timeout=20)
            took = time.monotonic() - t0
            await settled(lambda: budgets[-1].held == 0, 2)
            return answer, took, budgets[-1].held

    answer, took, held = asyncio.run(run())
    assert not answer.startswith(b"HTTP/1.1 2") and took < 5, (answer[:100], took)
    assert held == 0, held


def test_a_half_close_before_the_bodys_handler_ran_is_an_abandon_too(budgets: list[bounds.ByteBudget]) -> None:
    """Part of a small body, then a half-close, in two writes one after the other: aiohttp has parsed the request but
    its handler has not run when the end of the client's sending is read. The body is abandoned at once (400,
    counted `abandoned`), its bytes never held until the body timeout."""
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

    async def run() -> tuple[bytes, config.FrontCounters]:
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


def test_an_extra_route_is_served_before_the_kserve_api_with_the_ports_own_answers() -> None:
    """`HttpPort.routes`: an exact path served by its own handler, which answers with the port's refusals (counted)
    or its own answer; any other path is the KServe v2 API's, which refuses an unknown one."""

    async def hello(port: http.HttpPort, request: web.BaseRequest) -> web.StreamResponse:
        if request.method != "POST":
            return port.refuse(policy.Refusal(f"{request.method} {request.path} is not served (POST only)",
                                              policy.Reason.ROUTE))
        return web.json_response({"models": list(port.cfg.models)})

    async def run() -> tuple[bytes, bytes, bytes, str]:
        async with running_front(routes={"/v1/hello": hello}) as (port, _, counters):
            post = b"POST /v1/hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            return (await exchange(port, post), await exchange(port, b"GET /v1/hello HTTP/1.1\r\nHost: x\r\n\r\n"),
                    await exchange(port, b"GET /v1/other HTTP/1.1\r\nHost: x\r\n\r\n"), counters.text())

    ok, wrong_method, other, text = asyncio.run(run())
    assert status(ok) == 200 and json.loads(ok.split(b"\r\n\r\n", 1)[1]) == {"models": [TOP]}, ok[:200]
    assert status(wrong_method) == 404 and b"POST only" in wrong_method, wrong_method[:200]
    assert status(other) == 404 and b"is not served" in other, other[:200]
    assert 'videoitg_front_rejected{protocol="http",reason="route"} 2' in text, text


def test_at_the_cap_the_oldest_idle_keepalive_connection_is_closed_for_a_new_one() -> None:
    """Like nginx at its connection limit: with the cap reached, a new connection is taken by closing the idle
    keep-alive connection idle longest; a connection with a request in flight or a body arriving is never the one
    closed, and with none idle the new one is refused (503). Each closed one is counted."""
    release = asyncio.Event()

    async def gated(request: web.Request) -> web.Response:
        if request.path.endswith("/infer"):
            await release.wait()
        return await upstream_echo(request)

    health = b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n"

    async def open_idle(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(health)
        assert status(await asyncio.wait_for(reader.readuntil(b"}"), 10)) == 200
        return reader, writer

    async def closed(reader: asyncio.StreamReader, within: float) -> bool:
        """Whether the front closes the connection within `within` s (what is left of an answer read on the way)."""
        try:
            await asyncio.wait_for(reader.read(), within)
            return True
        except asyncio.TimeoutError:
            return False

    async def run() -> tuple[list[object], str]:
        async with running_front(gated, max_connections=4) as (port, _, counters):
            in_flight = await asyncio.open_connection("127.0.0.1", port)
            in_flight[1].write(infer_head(len(BODY)) + BODY)
            arriving = await asyncio.open_connection("127.0.0.1", port)
            head = infer_head(len(VIDEO_HEADER) + 1000, f"Inference-Header-Content-Length: {len(VIDEO_HEADER)}")
            arriving[1].write(head + VIDEO_HEADER + b"v" * 10)
            older = await open_idle(port)
            await asyncio.sleep(0.05)
            newer = await open_idle(port)
            first = await open_idle(port)  # at the cap: the oldest idle one makes room
            got: list[object] = [await closed(older[0], 5), await closed(newer[0], 0.3)]
            second = await open_idle(port)
            got.append(await closed(newer[0], 5))
            held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]  # requests in flight, each
            for _, writer in held:  # taking an idle connection's place (first's, then second's)
                writer.write(infer_head(len(BODY)) + BODY)
            await asyncio.sleep(0.2)
            got += [await closed(first[0], 5), await closed(second[0], 5)]
            full = await exchange(port, health, timeout=5)  # 4 connections, none of them idle
            got.append(status(full))
            release.set()
            arriving[1].write(b"v" * 990)
            for reader, _ in (in_flight, arriving, *held):
                got.append(status(await asyncio.wait_for(reader.readuntil(b"}"), 10)))
            for _, writer in (in_flight, arriving, *held, older, newer, first, second):
                writer.close()
            return got, counters.text()

    got, text = asyncio.run(run())
    assert got == [True, False, True, True, True, 503, 200, 200, 200, 200], got
    assert 'videoitg_front_idle_closed{protocol="http"} 4' in text, text


def test_health_is_answered_within_a_second_when_tritonserver_does_not_answer() -> None:
    """A stopped tritonserver (SIGSTOP) answers nothing: health and readiness are answered not ready (503) within
    1 s, the bound of a Kubernetes probe, where metadata waits out its 10 s bound."""

    async def never(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    async def run() -> list[tuple[int, float]]:
        async with running_front(never, pass_timeout_s=10.0) as (port, _, _):
            took = []
            for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{TOP}/ready"):
                request = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                answer, s = await quickest_async(lambda request=request: exchange(port, request), 1.0)
                took.append((status(answer), round(s, 2)))
            return took

    took = asyncio.run(run())
    assert all(code == 503 and s < 1.0 for code, s in took), took


def test_the_inference_key_goes_with_every_inference_passed_on_and_a_clients_never_does() -> None:
    """tritonserver takes an inference only with the key the front holds: the front adds it to each inference it
    passes on (a whole body and one passed on as it arrives), to nothing else, and never passes on a client's."""

    async def run() -> list[dict[str, str]]:
        async with running_front(infer_key="the-key", max_request_bytes=8 << 20) as (port, _, _):
            answers = [await exchange(port, infer_head(len(BODY), "Connection: close", "videoitg-infer-key: mine") +
                                      BODY),
                       await exchange(port, b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                                            b"videoitg-infer-key: mine\r\n\r\n")]
            body = VIDEO_HEADER + b"v" * (2 << 20)  # passed on as it arrives
            head = infer_head(len(body), f"Inference-Header-Content-Length: {len(VIDEO_HEADER)}", "Connection: close")
            answers.append(await exchange(port, head + body))
            return [json.loads(a.split(b"\r\n\r\n", 1)[1])["headers"] for a in answers]

    infer, health, streamed = asyncio.run(run())
    assert infer.get("videoitg-infer-key") == streamed.get("videoitg-infer-key") == "the-key", (infer, streamed)
    assert "videoitg-infer-key" not in health, health
