"""The video-LLM client of the answer endpoint against stand-in upstreams on loopback (a real video-LLM is in
tests/front/test_answer_served.py): each failure typed with its status, its status mapped by one rule, its bytes
read with a client's bounds, the base URL's credentials sent and never shown, a streamed answer carrying the
selection in its first event, a caller that goes away closing the upstream's connection."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

pytest.importorskip("aiohttp")  # the serve extra

from aiohttp import web

from tests.support.front import http_stand_in
from videoitg.answer import videollm
from videoitg.answer.bounded_json import PARSE_HOLD
from videoitg.answer.chat import Selection
from videoitg.answer.errors import OverloadedError, UpstreamRefusedError, UpstreamTimeoutError, UpstreamUnavailableError
from videoitg.answer.relay import event_data
from videoitg.answer.videollm import (
    ChatUpstream,
    answered_status,
    check_base_url,
    selection_stream,
)
from videoitg.errors import InputError
from videoitg.front.bounds import ByteBudget
from videoitg.launch.ports import free_port

SEL = Selection([3, 9], [0.1, 0.3], [0.7, 0.9], [], [b"a", b"b"], 0.05)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _serve(handler: Handler) -> tuple[web.AppRunner, str]:
    runner, port = await http_stand_in(handler)
    return runner, f"http://127.0.0.1:{port}/v1"


def run(handler: Handler, test: Callable[[ChatUpstream], Awaitable[Any]], userinfo: str = "", **kw: Any) -> Any:
    async def main() -> Any:
        runner, url = await _serve(handler)
        up = ChatUpstream(url.replace("http://", f"http://{userinfo}"), **kw)
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

    with pytest.raises(UpstreamUnavailableError, match="answer is not valid JSON"):
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
    assert asyncio.run(_all(selection_stream(_chunks(), SEL))).startswith(b"data: ")
    with pytest.raises(UpstreamUnavailableError, match="an event of more than 100 bytes"):
        asyncio.run(_all(selection_stream(_chunks(b"data: " + b"x" * 60, b"x" * 60), SEL, max_event=100)))


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


def test_the_status_rule() -> None:
    """2xx an answer; 4xx and 5xx passed on as the video-LLM's refusal; anything else (a redirect, a status outside
    100-599, a 1xx as the final answer) 502."""
    assert [answered_status(s) for s in (200, 201, 299)] == [None] * 3
    assert [answered_status(s) for s in (400, 401, 404, 422, 500, 503, 599)] == [400, 401, 404, 422, 500, 503, 599]
    assert [answered_status(s) for s in (100, 101, 199, 300, 302, 307, 399, 600, 999, 0, 99)] == [502] * 11


@pytest.mark.parametrize("status", [302, 600, 999])
def test_a_redirect_or_a_status_outside_the_http_range_is_502(status: int) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, headers={"Location": "http://elsewhere/"}, text='{"id": "redirect"}')

    with pytest.raises(UpstreamUnavailableError, match=f"answered status {status}, which is not an answer") as e:
        run(handler, lambda up: up.complete(b"{}", SEL))
    assert e.value.status == 502


@pytest.mark.parametrize(("payload", "message"), [
    (b'{"error": {"message": null, "code": 7}}', 'answered 401: {"message": null, "code": 7}'),
    (b'{"error": ' + b"[" * 100_000 + b"}", 'answered 401: {"error": [[[['),  # not JSON to read: its text, cut
    (b'{"error": {"message": ' + b"[" * 70 + b"]" * 70 + b"}}", 'answered 401: {"error": {"message": [[['),
    (b'{"detail": 3}', "answered 401: 3"),
], ids=["null-message", "many-items", "deep", "number"])
def test_an_error_body_of_any_shape_is_its_text(payload: bytes, message: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=401, body=payload, content_type="application/json")

    with pytest.raises(UpstreamRefusedError) as e:
        run(handler, lambda up: up.complete(b"{}", SEL))
    assert e.value.status == 401 and message in str(e.value) and len(str(e.value)) < 1200, e.value


@pytest.mark.parametrize(("payload", "match"), [
    (b"[" * 100_000, "more than 65536 objects"),
    (b'{"a": ' + b"[" * 70 + b"]" * 70 + b"}", "nests more than 64 levels"),
    (b'{"choices": [], "x": NaN}', "not valid JSON"),
    (b'{"choices": [], "x": 1e400}', "number out of range"),
    (b'{"seed": ' + b"9" * 5000 + b"}", "integer of more than 100 digits"),
    (b"[1]", "without a JSON object"),
], ids=["many-items", "deep", "nan", "overflow", "digits", "a-list"])
def test_an_answer_is_read_with_a_clients_bounds(payload: bytes, match: str) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=payload, content_type="application/json")

    for call in (lambda up: up.complete(b"{}", SEL), lambda up: up.models()):
        with pytest.raises(UpstreamUnavailableError, match=match) as e:
            run(handler, call)
        assert e.value.status == 502


def test_an_answer_over_the_bound_or_the_budget_is_refused() -> None:
    answer = json.dumps({"choices": [{"message": {"content": "y" * 5000}}]}).encode()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    with pytest.raises(UpstreamUnavailableError, match="answer is over 4000 bytes"):
        run(handler, lambda up: up.complete(b"{}", SEL), max_bytes=4000)

    roomy, tight = ByteBudget(1 << 20), ByteBudget(len(answer))
    assert run(handler, lambda up: up.complete(b"{}", SEL, budget=roomy))["videoitg"] == SEL.field()
    # held while read, then with the copies its parse makes, then given back
    assert roomy.held == 0 and roomy.high == int(PARSE_HOLD * len(answer)), roomy.high
    with pytest.raises(OverloadedError, match="holds too many bytes now to read the video-LLM.s answer") as e:
        run(handler, lambda up: up.complete(b"{}", SEL, budget=tight))
    assert e.value.status == 503 and tight.held == 0


def test_credentials_in_the_base_url_are_sent_and_never_shown() -> None:
    """`http://user:pass@host/v1`: basic authentication on every request, the client's own Authorization not sent
    (the URL's credentials win: one rule); never in a message, even one where the video-LLM quotes them back."""
    seen: list[str | None] = []
    token = base64.b64encode(b"ops:s3cr%t pass").decode()

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        if request.path.endswith("/models"):
            return web.json_response({"data": [{"id": "m"}]})
        return web.json_response({"error": {"message": f"bad key {request.headers.get('Authorization')} for "
                                            "ops:s3cr%t pass (s3cr%t pass)"}}, status=401)

    userinfo = "ops:s3cr%25t%20pass@"
    assert run(handler, lambda up: up.models({"Authorization": "Bearer client-key"}), userinfo)["data"]
    with pytest.raises(UpstreamRefusedError) as e:
        run(handler, lambda up: up.complete(b"{}", SEL, {"authorization": "Bearer client-key"}), userinfo)
    assert seen == [f"Basic {token}"] * 2
    text = str(e.value)
    assert e.value.status == 401 and "answered 401: bad key Basic *** for *** (***)" in text, text
    assert "s3cr" not in text and token not in text and "ops:" not in text and "@" not in text, text
    up = ChatUpstream(f"http://{userinfo}127.0.0.1:9/v1")
    assert up.base_url == "http://127.0.0.1:9/v1"
    with pytest.raises(UpstreamUnavailableError, match="cannot be reached") as e:
        asyncio.run(_close_after(up, up.complete(b"{}", SEL)))
    assert "s3cr" not in str(e.value) and "ops" not in str(e.value)
    with pytest.raises(InputError) as bad:
        check_base_url("ftp://ops:s3cret@h/v1")
    assert "s3cret" not in str(bad.value)


def test_without_credentials_in_the_url_the_clients_authorization_is_passed_on() -> None:
    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"data": []})

    run(handler, lambda up: up.models({"Authorization": "Bearer client-key"}))
    run(handler, lambda up: up.models())
    assert seen == ["Bearer client-key", None]


async def _close_after(up: ChatUpstream, work: Awaitable[Any]) -> Any:
    try:
        return await work
    finally:
        await up.close()


# ---- an upstream that cannot be reached: its cause and what to do ------------------------------------------------
def _models(url: str) -> UpstreamUnavailableError:
    async def ask() -> None:
        up = ChatUpstream(url, timeout_s=10)
        try:
            await up.models()
        finally:
            await up.close()

    with pytest.raises(UpstreamUnavailableError) as e:
        asyncio.run(ask())
    assert e.value.status == 502
    return e.value


def test_a_video_llm_name_that_does_not_resolve_is_said_with_what_to_check() -> None:
    """Catches: "cannot be reached (ClientConnectorDNSError: ...)", nothing said of what to do."""
    said = str(_models("http://videollm.no-such-name.invalid:8000/v1"))
    assert "its host name videollm.no-such-name.invalid does not resolve here: check the host of --answer-upstream" \
        in said, said
    said = str(_models(f"http://127.0.0.1:{free_port()}/v1"))
    assert "nothing answers at 127.0.0.1:" in said and "start the video-LLM there" in said, said


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(certificate, key) for `localhost`, signed by itself (openssl's command line; skipped without it)."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("no openssl command to make a certificate")
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"), "-out",
                    str(d / "cert.pem"), "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    return str(d / "cert.pem"), str(d / "key.pem")


def _https(cert: tuple[str, str], host: str, env: dict[str, str] | None = None) -> str:
    """What `ChatUpstream.models()` gives against an https stand-in with `cert`, asked in a process of its own
    (aiohttp reads SSL_CERT_FILE, in `env`, once, when it is imported)."""
    import os
    import subprocess
    import sys

    from tests.support import ROOT

    script = f"""
import asyncio, ssl
from aiohttp import web
from videoitg.answer.videollm import ChatUpstream
async def main():
    app = web.Application()
    app.router.add_get("/v1/models", lambda r: web.json_response({{"data": [{{"id": "m"}}]}}))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain({cert[0]!r}, {cert[1]!r})
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
    await site.start()
    up = ChatUpstream(f"https://{host}:{{site._server.sockets[0].getsockname()[1]}}/v1", timeout_s=10)
    try:
        print(await up.models())
    except Exception as e:
        print(e)
    await up.close()
    await runner.cleanup()
asyncio.run(main())
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=60,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_a_video_llm_certificate_not_accepted_is_said_with_the_fix_which_works(self_signed: tuple[str, str]) -> None:
    """Catches: "cannot be reached (ClientConnectorCertificateError: ...)", nothing said of what to do; the fix it
    names (SSL_CERT_FILE) then reaches it."""
    said = _https(self_signed, "localhost")
    assert "its TLS certificate is not accepted (self-signed certificate): give `videoitg serve` the CA that signed " \
        "it (SSL_CERT_FILE=ca.pem)" in said, said
    assert _https(self_signed, "localhost", {"SSL_CERT_FILE": self_signed[0]}) == "{'data': [{'id': 'm'}]}"
    said = _https(self_signed, "127.0.0.1", {"SSL_CERT_FILE": self_signed[0]})  # trusted, but not for that name
    assert "certificate is not valid for '127.0.0.1'" in said and "name the host its certificate is for" in said, said


async def _closes_kept_connections(answered: list[int], connections: list[int], close_new: bool = False,
                                   after_s: float = 0.0, resets: list[int] | None = None) -> Any:
    """A video-LLM on loopback that answers the first request of each connection and closes it, unanswered, when the
    next request arrives on it: the race of an idle close (uvicorn's, after 5 s) with a request sent on the kept
    connection. With `close_new`, it closes every connection unanswered; with `after_s`, it works on a kept
    connection's request that long before closing it (a crash mid-answer, not the race); with `resets`, it resets
    the kept connection (an RST) as soon as the request's head arrived, while its body is being written, and notes
    each reset there."""
    body = json.dumps({"id": "c1", "choices": []}).encode()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            for n in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                if n and resets is not None:
                    resets.append(1)
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                await reader.readexactly(int(length[1]) if length else 0)
                if n or close_new:
                    await asyncio.sleep(after_s)
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
                answered.append(1)
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(connection, "127.0.0.1", 0)


def test_a_request_on_a_kept_connection_the_video_llm_closed_as_it_arrived_is_sent_once_more() -> None:
    answered: list[int] = []
    connections: list[int] = []

    async def main() -> None:
        server = await _closes_kept_connections(answered, connections)
        up = ChatUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            for _ in range(4):  # the 2nd and 4th go on the kept connection, closed, then on a new one; the 3rd on a
                assert (await up.complete(b"{}", SEL))["id"] == "c1"  # new one, kept after
        finally:
            await up.close()
            server.close()

    asyncio.run(main())
    assert len(answered) == 4  # each answered once
    assert len(connections) == 4


def test_a_kept_connection_reset_while_the_request_body_is_written_is_sent_once_more_on_a_new_one() -> None:
    """The write side of the race (aiohttp's ClientOSError, 'Can not write request body' or a reset): a body larger
    than the socket buffers is still being written when the video-LLM resets the kept connection."""
    answered: list[int] = []
    connections: list[int] = []
    resets: list[int] = []

    async def main() -> None:
        server = await _closes_kept_connections(answered, connections, resets=resets)
        up = ChatUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            assert (await up.complete(b"{}", SEL))["id"] == "c1"
            assert (await up.complete(b" " * (16 << 20) + b"{}", SEL))["id"] == "c1"
        finally:
            await up.close()
            server.close()

    asyncio.run(main())
    assert len(answered) == 2 and len(connections) == 2  # the second sent on the kept one, reset, then on a new one
    assert len(resets) == 1


def test_a_new_connection_closed_unanswered_is_502_naming_it_and_not_sent_again() -> None:
    connections: list[int] = []

    async def main() -> None:
        server = await _closes_kept_connections([], connections, close_new=True)
        up = ChatUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            await up.complete(b"{}", SEL)
        finally:
            await up.close()
            server.close()

    with pytest.raises(UpstreamUnavailableError, match="closed the connection without an answer") as e:
        asyncio.run(main())
    assert e.value.status == 502
    assert len(connections) == 1


def test_a_connection_idle_longer_than_the_keepalive_is_not_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEEPALIVE_S (4 s, below uvicorn's 5 s) read at 0.2 s: a request after 0.4 s idle goes on a new connection."""
    monkeypatch.setattr(videollm, "KEEPALIVE_S", 0.2)
    connections: list[int] = []

    async def main() -> None:
        server = await _closes_kept_connections([], connections)
        up = ChatUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            await up.complete(b"{}", SEL)
            await asyncio.sleep(0.4)
            await up.complete(b"{}", SEL)
        finally:
            await up.close()
            server.close()

    asyncio.run(main())
    assert len(connections) == 2  # reused, it would be 3: the kept one closed, then a new one


def test_a_kept_connection_that_breaks_after_working_on_the_request_is_not_sent_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Closed RACE_S (read at 0.2 s) or more after the request went: the video-LLM worked on it, so it is not the
    idle close's race and the 502 is the answer (a crash mid-answer would otherwise run twice)."""
    monkeypatch.setattr(videollm, "RACE_S", 0.2)
    connections: list[int] = []

    async def main() -> None:
        server = await _closes_kept_connections([], connections, after_s=0.5)
        up = ChatUpstream(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            await up.complete(b"{}", SEL)
            await up.complete(b"{}", SEL)
        finally:
            await up.close()
            server.close()

    with pytest.raises(UpstreamUnavailableError, match="closed the connection without an answer"):
        asyncio.run(main())
    assert len(connections) == 1
