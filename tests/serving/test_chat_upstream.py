"""The video-LLM client of the answer endpoint against stand-in upstreams on loopback (a real video-LLM is in
tests/serving/test_answer_endpoint.py): each failure typed with its status, a streamed answer carries the selection
in its first event, a caller that goes away closes the upstream's connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")  # the serve extra

from aiohttp import web

from tests.support.front import http_stand_in
from videoitg.answer.chat import (
    Selection,
    UpstreamRefusedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    event_data,
)
from videoitg.answer.upstream import MAX_FIRST_EVENT, ChatUpstream, check_base_url, selection_stream
from videoitg.errors import InputError
from videoitg.serving.ports import free_port

SEL = Selection([3, 9], [0.1, 0.3], [0.7, 0.9], [], [b"a", b"b"], 0.05)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    runner, port = await http_stand_in(handler)
    return runner, f"http://127.0.0.1:{port}/v1"


def run(handler: Handler, test: Callable[[ChatUpstream], Awaitable[Any]], **kw: Any) -> Any:
    async def main() -> Any:
        runner, url = await _serve(handler)
        up = ChatUpstream(url, **kw)
        try:
            return await test(up)
        finally:
            await up.close()
            await runner.cleanup()

    return asyncio.run(main())


def test_a_plain_answer_gets_the_selection_and_the_request_is_sent_as_given() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(path=request.path, body=await request.json(), auth=request.headers.get("Authorization"),
                    other=request.headers.get("X-Other"))
        return web.json_response({"id": "c1", "choices": [{"message": {"content": "yes"}}]})

    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "temperature": 0}
    out = run(handler, lambda up: up.complete(json.dumps(body).encode(), SEL,
                                              {"Authorization": "Bearer k", "X-Other": "no"}))
    assert seen == {"path": "/v1/chat/completions", "body": body, "auth": "Bearer k", "other": None}
    assert out == {"id": "c1", "choices": [{"message": {"content": "yes"}}], "videoitg": SEL.field()}


@pytest.mark.parametrize(("status", "payload", "message"), [
    (422, {"error": {"message": "too many images", "type": "BadRequestError"}}, "answered 422: too many images"),
    (400, {"detail": "Server is pinned to 'x'"}, "answered 400: Server is pinned to 'x'"),
    (401, "no key", "answered 401: no key"),
    (503, "x" * 5000, r"answered 503: x{1024} \[\.\.\.\]"),
])
def test_a_refusal_keeps_its_status_and_text(status: int, payload: Any, message: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        if isinstance(payload, str):
            return web.Response(status=status, text=payload)
        return web.json_response(payload, status=status)

    with pytest.raises(UpstreamRefusedError, match=message) as e:
        run(handler, lambda up: up.complete(b'{"messages": []}', SEL))
    assert e.value.status == status


def test_an_upstream_that_is_down_is_502_and_one_too_slow_is_504() -> None:
    async def down() -> None:
        up = ChatUpstream(f"http://127.0.0.1:{free_port()}/v1")
        try:
            await up.complete(b"{}", SEL)
        finally:
            await up.close()

    with pytest.raises(UpstreamUnavailableError, match="cannot be reached") as e:
        asyncio.run(down())
    assert e.value.status == 502

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({})

    with pytest.raises(UpstreamTimeoutError, match="did not answer within 0.3 s") as e:
        run(slow, lambda up: up.complete(b"{}", SEL), timeout_s=0.3)
    assert e.value.status == 504


def test_an_answer_that_is_not_a_json_object_or_breaks_off_is_502() -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>proxy</html>", content_type="text/html")

    with pytest.raises(UpstreamUnavailableError, match="without a JSON object"):
        run(html, lambda up: up.complete(b"{}", SEL))

    async def cut(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Length": "1000", "Content-Type": "application/json"})
        await r.prepare(request)
        await r.write(b'{"id": ')
        request.transport.close()
        return r

    with pytest.raises(UpstreamUnavailableError):
        run(cut, lambda up: up.complete(b"{}", SEL))


def test_an_answer_that_arrives_in_pieces_is_read_whole() -> None:
    """A plain answer (or an error text) is read to its end, not only what the first piece brought."""
    answer = {"id": "c1", "choices": [{"message": {"content": "y" * 100_000}}]}

    def in_pieces(status: int, payload: dict[str, Any]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            body = json.dumps(payload).encode()
            r = web.StreamResponse(status=status, headers={"Content-Type": "application/json",
                                                           "Content-Length": str(len(body))})
            await r.prepare(request)
            for at in range(0, len(body), 300):
                await r.write(body[at:at + 300])
                await asyncio.sleep(0.01 if at < 3000 else 0)
            return r

        return handler

    assert run(in_pieces(200, answer), lambda up: up.complete(b"{}", SEL)) == {**answer, "videoitg": SEL.field()}
    with pytest.raises(UpstreamRefusedError, match=r"answered 400: bad image$"):
        run(in_pieces(400, {"error": {"message": "bad image", "padding": "x" * 600}}),
            lambda up: up.complete(b"{}", SEL))


def sse(*chunks: dict[str, Any] | str) -> list[bytes]:
    return [f"data: {c if isinstance(c, str) else json.dumps(c)}\n\n".encode() for c in chunks]


async def _relay(up: ChatUpstream, body: dict[str, Any]) -> list[bytes]:
    out = []
    async with up.request("POST", "/chat/completions", json.dumps(body).encode(), stream=True) as resp:
        async for b in selection_stream(up.chunks(resp), SEL):
            out.append(b)
    return out


def test_a_stream_is_relayed_with_the_selection_in_its_first_event() -> None:
    events = sse({"id": "s", "choices": [{"delta": {"role": "assistant"}}]}, {"id": "s", "choices": [{"delta":
                 {"content": "hi"}}]}, "[DONE]")

    async def handler(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await r.prepare(request)
        await r.write(b": keep-alive\n\n")
        for e in events:
            await r.write(e[:5])  # events split across writes
            await r.write(e[5:])
        return r

    got = b"".join(run(handler, lambda up: _relay(up, {"stream": True})))
    head, first, rest = got.split(b"\n\n", 2)
    assert head == b": keep-alive"
    assert json.loads(event_data(first + b"\n\n")) == {"id": "s", "choices": [{"delta": {"role": "assistant"}}],
                                                       "videoitg": SEL.field()}
    assert rest == b"".join(events[1:])


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for p in parts:
        yield p


async def _all(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([b async for b in it])


def test_a_stream_whose_first_event_holds_no_object_gets_an_event_of_its_own() -> None:
    got = asyncio.run(_all(selection_stream(_chunks(b"data: [DONE]\n\n"), SEL)))
    first, rest = got.split(b"\n\n", 1)
    assert json.loads(event_data(first))["videoitg"] == SEL.field() and rest == b"data: [DONE]\n\n"
    long = b"data: " + b"x" * (MAX_FIRST_EVENT + 10)
    got = asyncio.run(_all(selection_stream(_chunks(long[:100], long[100:], b"\n\n"), SEL)))
    first, rest = got.split(b"\n\n", 1)
    assert json.loads(event_data(first))["videoitg"] == SEL.field() and rest == long + b"\n\n"
    assert asyncio.run(_all(selection_stream(_chunks(), SEL))).startswith(b"data: ")


def test_a_caller_that_goes_away_closes_the_upstream_connection() -> None:
    gone = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        r = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await r.prepare(request)
        try:
            for i in range(100):
                await r.write(f"data: {json.dumps({'i': i})}\n\n".encode())
                await asyncio.sleep(0.05)
        except (ConnectionError, asyncio.CancelledError):
            gone.set()
            raise
        return r

    async def test(up: ChatUpstream) -> None:
        async def consume() -> None:
            async with up.request("POST", "/chat/completions", b"{}", stream=True) as resp:
                async for _ in selection_stream(up.chunks(resp), SEL):
                    pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.wait_for(gone.wait(), 5)  # the upstream saw its client leave

    run(handler, test)


def test_base_urls_are_checked() -> None:
    assert check_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    for bad in ("ftp://h/v1", "http:///v1", "127.0.0.1:8000", "http://h/v1?x=1"):
        with pytest.raises(InputError, match="must be an http"):
            check_base_url(bad)
