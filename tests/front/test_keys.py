"""API keys and TLS on the front's ports, in this process in front of stand-ins for tritonserver and a video-LLM
(tests/support/front.py): which requests need a key (everything but health and the page's files, whatever the
route or method), one answer and one path for a missing and a wrong key, the counters, TLS handshakes that fail or
never finish, and the answer endpoint's keys. With the real server and the clients: test_access_served.py."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import statistics
import time
from pathlib import Path

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

import grpc
from aiohttp import web
from tritonclient.grpc import service_pb2

from tests.support.access import make_ca, new_key
from tests.support.front import exchange, grpc_front, running_front, status
from tests.support.server import settled
from videoitg.answer.chat import PATHS
from videoitg.answer.videollm import ChatUpstream
from videoitg.contract.access import KeyStore
from videoitg.contract.protocol import DECODE, TOP
from videoitg.front import config, connections, policy, tls, webpage
from videoitg.front import grpc as grpc_port
from videoitg.front.grpc_policy import GRPC_METHODS, HEALTH_METHODS, SERVICE
from videoitg.front.policy import KeyOutcome, key_outcome

KEY, OTHER = new_key(), new_key()
WRONG = KEY[:-1] + ("1" if KEY.endswith("0") else "0")  # one character off: never the key itself
KEYS = KeyStore([OTHER, KEY])


def test_the_check_accepts_one_bearer_key_of_the_servers() -> None:
    assert key_outcome([f"Bearer {KEY}"], KEYS) is KeyOutcome.ACCEPTED
    assert key_outcome([f"bearer {OTHER}"], KEYS) is KeyOutcome.ACCEPTED
    assert key_outcome([], KEYS) is KeyOutcome.MISSING
    for given in ([f"Bearer {new_key()}"], [KEY], [f"Basic {KEY}"], ["Bearer"], [f"Bearer {KEY}", f"Bearer {KEY}"]):
        assert key_outcome(given, KEYS) is KeyOutcome.WRONG, given


# Every kind of request the HTTP port can be sent: the KServe routes by shape and method, the answer endpoint's,
# the page's files, the model-repository and other APIs the front refuses, paths it does not serve.
_MODEL_PATHS = [f"/v2/models/{m}{v}{a}" for m in (TOP, DECODE, "nope") for v in ("", "/versions/1")
                for a in ("", "/infer", "/ready", "/config", "/stats")]
PATHS_TRIED = ["/v2", "/v2/health/live", "/v2/health/ready", *_MODEL_PATHS, *PATHS, *webpage.FILES, "/metrics",
               "/v2/repository/index", "/v2/repository/models/videoitg/load", "/v2/systemsharedmemory/status",
               "/v2/logging", "/v2/trace/setting", "/v1/completions", "/favicon.ico", "/%2e%2e/v2", "/page.js/x",
               "/v2/health/ready/", "/V2/health/ready", "/v2/health/ready?x=1"]
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")


def request(method: str, path: str, *headers: str) -> bytes:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else b""
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", f"Content-Length: {len(body)}",
             *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def exempt(method: str, path: str) -> bool:
    """The front's rule, said again here: health by GET, the page's files by GET and HEAD (a query aside)."""
    path = path.partition("?")[0]
    return (method == "GET" and policy.is_health(path)) or (method in ("GET", "HEAD") and path in webpage.FILES)


def front_kw() -> dict:
    cfg = config.FrontConfig(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0, triton_http="",
                             triton_grpc="", triton_metrics="", models=(TOP,), max_request_bytes=1 << 20)
    return {"keys": KEYS, "pages": webpage.page_routes(cfg, True), "answer_upstream": "http://127.0.0.1:9/v1"}


def test_no_route_or_method_but_health_and_the_pages_files_answers_without_a_key() -> None:
    reached: list[str] = []

    async def triton(r: web.Request) -> web.Response:
        reached.append(r.path)
        await r.read()
        return web.json_response({})

    async def run() -> dict[tuple[str, str, str], int]:
        got = {}
        async with running_front(triton, **front_kw()) as (port, _, _):
            for method in METHODS:
                for path in PATHS_TRIED:
                    for given in ("none", "wrong"):
                        auth = () if given == "none" else (f"Authorization: Bearer {new_key()}",)
                        got[method, path, given] = status(await exchange(port, request(method, path, *auth)))
        return got

    got = asyncio.run(run())
    opened = {k: s for k, s in got.items() if s != 401}
    assert opened and all(exempt(m, p) for m, p, _ in opened), sorted(k for k in opened if not exempt(*k[:2]))
    assert {(m, p) for m, p, _ in opened} == {(m, p) for m in METHODS for p in PATHS_TRIED if exempt(m, p)}
    assert all(policy.is_health(p) for p in reached), reached  # nothing else reached tritonserver


def test_with_a_key_every_request_goes_on_to_its_route() -> None:
    async def run() -> dict[tuple[str, str], int]:
        async with running_front(**front_kw()) as (port, _, _):
            return {(m, p): status(await exchange(port, request(m, p, f"authorization: bearer {KEY}")))
                    for m in ("GET", "POST", "OPTIONS") for p in PATHS_TRIED}

    got = asyncio.run(run())
    assert 401 not in got.values(), [k for k, s in got.items() if s == 401]
    assert got["GET", "/v2"] == 200 and got["OPTIONS", "/"] == 404 and got["GET", "/v2/repository/index"] == 404


def without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.lower().startswith(b"date:"))


def test_a_missing_and_a_wrong_key_get_the_same_bytes_by_the_same_path() -> None:
    async def run() -> tuple[dict[str, list[bytes]], dict[str, list[float]], str]:
        answers: dict[str, list[bytes]] = {"none": [], "wrong": []}
        took: dict[str, list[float]] = {"none": [], "wrong": []}
        async with running_front(**front_kw()) as (port, metrics_port, counters):
            for i in range(120):  # interleaved, so a busy moment of the machine falls on both
                for given in (("none", "wrong") if i % 2 else ("wrong", "none")):
                    auth = () if given == "none" else (f"Authorization: Bearer {WRONG}",)
                    path = "/v1/models" if i % 3 == 0 else "/v2/models/videoitg"
                    t0 = time.perf_counter()
                    answer = await exchange(port, request("GET", path, *auth))
                    took[given].append(time.perf_counter() - t0)
                    answers[given].append(path.encode() + without_date(answer))
            metrics = (await exchange(metrics_port, request("GET", "/metrics"))).decode()
        return answers, took, metrics

    answers, took, metrics = asyncio.run(run())
    assert answers["none"] == answers["wrong"]  # byte for byte, in the same order of routes
    kserve, openai = answers["none"][1], answers["none"][0]
    assert kserve.startswith(b"/v2/models/videoitgHTTP/1.1 401 Unauthorized\r\n")
    assert b"WWW-Authenticate: Bearer\r\n" in kserve
    assert json.loads(kserve.split(b"\r\n\r\n")[1]) == {"error": policy.KEY_REFUSAL}
    assert json.loads(openai.split(b"\r\n\r\n")[1])["error"]["code"] == "api_key"  # the OpenAI shape on /v1
    a, b = statistics.median(took["none"]), statistics.median(took["wrong"])
    assert max(a, b) < 2 * min(a, b) or abs(a - b) < 0.020, (a, b)  # loose: the same code path answers both
    assert 'videoitg_front_api_key{protocol="http",outcome="missing"} 120' in metrics
    assert 'videoitg_front_api_key{protocol="http",outcome="wrong"} 120' in metrics
    assert 'videoitg_front_rejected{protocol="http",reason="api_key"} 240' in metrics
    assert KEY[:-1] not in metrics


def test_no_key_wanted_is_the_front_as_before() -> None:
    async def run() -> tuple[int, str]:
        async with running_front() as (port, metrics_port, _):
            answer = status(await exchange(port, request("GET", "/v2")))
            return answer, (await exchange(metrics_port, request("GET", "/metrics"))).decode()

    answer, metrics = asyncio.run(run())
    assert answer == 200 and "videoitg_front_api_key" not in metrics


def test_every_grpc_method_but_health_wants_a_key() -> None:
    async def run() -> tuple[dict[tuple[str, str], str], str]:
        got = {}
        async with grpc_front(keys=KEYS) as (address, counters, _):
            async with grpc.aio.insecure_channel(address) as channel:
                for method in (*GRPC_METHODS, "ModelStreamInfer", "RepositoryModelLoad", "Nope"):
                    call = channel.unary_unary(f"/{SERVICE}/{method}")
                    for given, metadata in (("none", ()), ("wrong", (("authorization", f"Bearer {OTHER}0"),)),
                                            ("right", (("authorization", f"Bearer {KEY}"),))):
                        try:
                            await call(b"", metadata=metadata, timeout=10)
                            got[method, given] = "OK"
                        except grpc.aio.AioRpcError as e:
                            got[method, given] = f"{e.code().name}: {e.details()}"
            return got, counters.text()

    got, metrics = asyncio.run(run())
    refusal = f"UNAUTHENTICATED: {policy.KEY_REFUSAL}"
    for method in (*GRPC_METHODS, "ModelStreamInfer", "RepositoryModelLoad", "Nope"):
        if method in HEALTH_METHODS:
            assert refusal not in (got[method, "none"], got[method, "wrong"]), method
        else:
            assert got[method, "none"] == got[method, "wrong"] == refusal, method
        assert got[method, "right"] != refusal, method
    assert got["ServerLive", "none"] == "OK"  # the stand-in answers it
    refused = len(GRPC_METHODS) - len(HEALTH_METHODS) + 3
    assert f'videoitg_front_api_key{{protocol="grpc",outcome="missing"}} {refused}' in metrics
    assert f'videoitg_front_api_key{{protocol="grpc",outcome="wrong"}} {refused}' in metrics


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tls.Certificates:
    ca = make_ca(tmp_path_factory.mktemp("ca"))
    certs = tls.Certificates(str(ca.cert), str(ca.key))
    certs.ca = ca  # type: ignore[attr-defined]
    return certs


def test_tls_handshakes_that_fail_or_never_finish_are_let_go(certs: tls.Certificates,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain HTTP to a TLS port, a client that does not trust the certificate, and a connection that sends nothing
    (closed at the handshake bound): each let go, and none keeps a place under a cap of 2 connections a port, so a
    client that trusts the certificate is still answered on both ports after all of them."""
    monkeypatch.setattr(connections, "KEEPALIVE_S", 1.0)
    monkeypatch.setattr(grpc_port, "KEEPALIVE_S", 1.0)

    def plain(port: int, data: bytes) -> tuple[bytes, float]:
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(data)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out, time.monotonic() - t0

    async def run() -> tuple[list[tuple[bytes, float]], bytes, str, int]:
        loop = asyncio.get_running_loop()
        async with running_front(keys=KEYS, certs=certs, max_connections=2) as (port, _, _):
            async with grpc_front(keys=KEYS, certs=certs, max_connections=2) as (address, _, gport):
                gp = int(address.rpartition(":")[2])
                plain_answers = []
                for _ in range(3):
                    for p in (port, gp):
                        plain_answers.append(await loop.run_in_executor(None, plain, p, request("GET", "/v2")))
                        plain_answers.append(await loop.run_in_executor(None, plain, p, b""))  # silent
                untrusting = ssl.create_default_context()  # the system's CAs: not the test CA
                for p in (port, gp) * 3:
                    with pytest.raises(ssl.SSLCertVerificationError):
                        await asyncio.open_connection("127.0.0.1", p, ssl=untrusting)
                trusting = ssl.create_default_context(cafile=str(certs.ca.ca))  # type: ignore[attr-defined]
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=trusting,
                                                               server_hostname="localhost")
                writer.write(request("GET", "/v2/health/live"))
                answer = await reader.read()
                writer.close()
                creds = grpc.ssl_channel_credentials(root_certificates=certs.ca.ca.read_bytes())  # type: ignore
                async with grpc.aio.secure_channel(address, creds) as channel:
                    live = await channel.unary_unary(f"/{SERVICE}/ServerLive")(b"", timeout=10)
                await settled(lambda: not gport.connections, 5)
                return plain_answers, answer, service_pb2.ServerLiveResponse.FromString(live).live, \
                    len(gport.connections)

    plain_answers, answer, live, grpc_open = asyncio.run(run())
    assert all(got == b"" for got, _ in plain_answers), plain_answers
    assert all(took < 5 for _, took in plain_answers), plain_answers  # the silent ones: at the 1 s bound
    assert status(answer) == 200 and live is True and grpc_open == 0


def test_the_certificate_is_made_again_when_its_files_change(certs: tls.Certificates, tmp_path: Path) -> None:
    first = certs.ca  # type: ignore[attr-defined]
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    moved = tls.Certificates(str(cert), str(key))
    assert moved.refresh() is None
    before = moved.context("grpc")
    cert.write_text("broken\n")
    said = moved.refresh()
    assert said is not None and "not loaded again" in said and moved.context("grpc") is before
    nxt = make_ca(tmp_path / "next")
    cert.write_bytes(nxt.cert.read_bytes())
    key.write_bytes(nxt.key.read_bytes())
    assert moved.refresh() == f"TLS certificate loaded again from {cert}"
    assert moved.context("grpc") is not before
    assert moved.reload() == f"TLS certificate loaded again from {cert}"  # SIGHUP: loaded again, changed or not


def test_the_answer_endpoint_never_sends_a_callers_key_when_the_server_has_keys(tmp_path: Path) -> None:
    operator = tmp_path / "upstream.key"
    operator.write_text("token-abc123\n")
    keyed = ChatUpstream("http://127.0.0.1:9/v1", key_file=str(operator), callers_key_passes=False)
    caller = {"Authorization": f"Bearer {KEY}"}
    assert keyed.headers(caller, False)["Authorization"] == "Bearer token-abc123"
    assert "Authorization" not in ChatUpstream("http://127.0.0.1:9/v1", callers_key_passes=False).headers(caller, True)
    assert ChatUpstream("http://127.0.0.1:9/v1").headers(caller, False)["Authorization"] == f"Bearer {KEY}"  # no keys
    with pytest.raises(Exception, match="given twice"):
        ChatUpstream("http://u:p@127.0.0.1:9/v1", key_file=str(operator))
    seen: list[str | None] = []

    async def llm(r: web.Request) -> web.Response:
        seen.append(r.headers.get("Authorization"))
        return web.json_response({"data": [{"id": "m"}]})

    async def run() -> list[int]:
        from tests.support.front import http_stand_in

        runner, llm_port = await http_stand_in(llm)
        try:
            kw = {**front_kw(), "answer_upstream": f"http://127.0.0.1:{llm_port}/v1"}
            async with running_front(**kw) as (port, _, _):
                return [status(await exchange(port, request("GET", "/v1/models", *auth)))
                        for auth in ((), (f"Authorization: Bearer {KEY}",))]
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == [401, 200]
    assert seen == [None]  # the one request that reached the video-LLM carried no key of the caller's
