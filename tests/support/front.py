"""Helpers of the front's tests (tests/front/): a front's ports in this process in front of a stand-in for
tritonserver (`running_front` for HTTP, `grpc_front` for gRPC), raw exchanges with them, and fake body streams."""

from __future__ import annotations

import asyncio
import gc
import json
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import grpc
from aiohttp import web
from hyperframe.frame import Frame
from tritonclient.grpc import service_pb2

from videoitg.contract.protocol import TOP
from videoitg.front import bounds, config
from videoitg.front.answer import answer_routes
from videoitg.front.grpc import GrpcPort
from videoitg.front.grpc_policy import SERVICE
from videoitg.front.http import HttpPort, MetricsPort
from videoitg.launch.ports import free_ports

T = TypeVar("T")
BODY = json.dumps({"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1],
                               "data": ["when does the dog jump?"]}]}).encode()
# The JSON header of a request whose video follows as binary data (Inference-Header-Content-Length)
VIDEO_HEADER = json.dumps({"inputs": [{"name": "VIDEO", "datatype": "BYTES", "shape": [1, 1]}]}).encode()
LIVE = f"/{SERVICE}/ServerLive"


async def upstream_echo(request: web.Request) -> web.Response:
    """Stands where tritonserver's HTTP endpoint stands: says what reached it."""
    body = await request.read()
    if request.path == "/metrics":
        return web.Response(text="nv_inference_request_success 0\n")
    return web.json_response({"headers": dict(request.headers), "body_bytes": len(body)})


async def http_stand_in(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> tuple[web.AppRunner, int]:
    """A small aiohttp server on a free loopback port answering every path with `handler`, in tritonserver's HTTP
    endpoint's place: (its runner, to clean up; its port)."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


@asynccontextmanager
async def running_front(upstream: Callable[[web.Request], Awaitable[web.StreamResponse]] = upstream_echo,
                        **kw: Any) -> AsyncIterator[tuple[int, int, config.FrontCounters]]:
    """(front's HTTP port, its metrics port, its counters), its budget from `config.held_budget`; its extra routes
    `routes`, else the answer endpoint's when `answer_upstream` is given (as the front's process serves them);
    `keys` (a KeyStore) and `certs` (tls.Certificates): who may use it."""
    up, up_port = await http_stand_in(upstream)
    routes = kw.pop("routes", None)
    keys, certs, pages = kw.pop("keys", None), kw.pop("certs", None), kw.pop("pages", None)
    cfg = config.FrontConfig(**{
        "host": "127.0.0.1", "http_port": 0, "grpc_port": 0, "metrics_port": 0,
        "triton_http": f"127.0.0.1:{up_port}", "triton_grpc": "127.0.0.1:1", "triton_metrics": f"127.0.0.1:{up_port}",
        "models": (TOP,), "max_request_bytes": 4 << 20, "shutdown_s": 1.0, **kw})
    counters = config.FrontCounters()
    extra = (routes, ()) if routes is not None else answer_routes(cfg, keys is None)
    http = HttpPort(cfg, counters, config.held_budget(cfg), *extra, pages=pages, keys=keys, certs=certs)
    metrics = MetricsPort(cfg, counters, certs)
    await http.start()
    await metrics.start()
    try:
        yield http.port, metrics.port, counters
    finally:
        await asyncio.gather(http.stop(), metrics.stop())
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


async def read_all(reader: bounds.BodyReader) -> int:
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


@asynccontextmanager
async def grpc_front(methods: dict[str, Callable[..., Awaitable[bytes]]] | None = None,
                     **kw: Any) -> AsyncIterator[tuple[str, config.FrontCounters, GrpcPort]]:
    """(the front's gRPC address, its counters, its GrpcPort), in front of a stand-in for tritonserver whose
    `methods` (raw bytes both ways; by default ServerLive, answered live) answer; `keys`, `certs`: who may use it."""

    async def live(raw: bytes, context: Any) -> bytes:
        return service_pb2.ServerLiveResponse(live=True).SerializeToString()

    up_port, port = free_ports(2)
    upstream = grpc.aio.server(options=[("grpc.max_receive_message_length", -1)])
    upstream.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in (methods or {"ServerLive": live}).items()}),))
    upstream.add_insecure_port(f"127.0.0.1:{up_port}")
    keys, certs = kw.pop("keys", None), kw.pop("certs", None)
    cfg = config.FrontConfig(**{"host": "127.0.0.1", "http_port": 0, "grpc_port": port, "metrics_port": 0,
                                "triton_http": "", "triton_grpc": f"127.0.0.1:{up_port}", "triton_metrics": "",
                                "models": (TOP,), "max_request_bytes": 64 << 10, **kw})
    counters = config.FrontCounters()
    server = GrpcPort(cfg, counters, config.held_budget(cfg), keys=keys, certs=certs)
    await upstream.start()
    await server.start()
    try:
        yield f"127.0.0.1:{port}", counters, server
    finally:
        await server.stop(0)
        await upstream.stop(0)


async def outcome(call: Awaitable[Any], timeout: float = 10) -> str:
    """'OK', the gRPC status code's name and text the call ended with, or 'open' (then cancelled) after `timeout`."""
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


async def raw_frames(reader: asyncio.StreamReader) -> AsyncIterator[Any]:
    """The frames a peer sends, parsed one by one (hyperframe), with no HTTP/2 state of the reader's own."""
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
