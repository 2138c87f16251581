"""The front's process (`python -m videoitg.front`) in front of stand-ins for tritonserver's HTTP and gRPC
endpoints: its ready line, its open-file limit and the connection caps it sets from it, and its stop."""

from __future__ import annotations

import asyncio
import json
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="the serve extra is not installed")

import h2.config  # noqa: E402
import h2.connection  # noqa: E402
from aiohttp import web  # noqa: E402
from hpack import Decoder  # noqa: E402
from hyperframe.frame import HeadersFrame  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

from benchmarks.serving.h2client import prefix  # noqa: E402
from tests.support import ROOT  # noqa: E402
from tests.support.front import BODY, exchange, http_stand_in, infer_head, raw_frames, status  # noqa: E402
from videoitg.contract.protocol import TOP  # noqa: E402
from videoitg.front.grpc_policy import SERVICE  # noqa: E402
from videoitg.launch.ports import free_ports  # noqa: E402

READY = re.compile(r"open files (\d+); connections http (\d+) grpc (\d+) metrics (\d+)")


def limit_files(soft: int, hard: int) -> Callable[[], None]:
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@asynccontextmanager
async def front_process(triton_http: str = "127.0.0.1:1", triton_grpc: str = "127.0.0.1:1",
                        files: tuple[int, int] | None = None,
                        **kw: Any) -> AsyncIterator[tuple[subprocess.Popen, list[int], str]]:
    """(the front's process, its HTTP, gRPC and metrics ports, its ready line), started as the launcher starts it
    and run until the block ends (then stopped with SIGINT, if still running)."""
    ports = free_ports(3)
    cfg = {"host": "127.0.0.1", "http_port": ports[0], "grpc_port": ports[1], "metrics_port": ports[2],
           "triton_http": triton_http, "triton_grpc": triton_grpc, "triton_metrics": triton_http,
           "models": [TOP], "max_request_bytes": 4 << 20, **kw}
    proc = subprocess.Popen([sys.executable, "-m", "videoitg.front", json.dumps(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=limit_files(*files) if files else None)
    try:
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        assert line.startswith("videoitg front:"), line + proc.stdout.read()
        yield proc, ports, line
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            proc.stdout.close()


def test_the_ready_line_says_the_open_file_limit_and_the_caps_set_from_it() -> None:
    """The front raises its soft open-file limit to the hard one and sets its connection caps from the limit it
    got, with room for a connection toward tritonserver per HTTP connection, the metrics port's and its own files;
    the ready line says both. A crowd of idle connections past the cap then takes no ordinary request's place."""

    async def run(files: tuple[int, int]) -> tuple[str, bytes]:
        async with front_process(files=files) as (_, ports, line):
            crowd = []
            if files[0] == files[1]:  # more silent connections than the cap allows, then an ordinary request
                for _ in range(1000):
                    crowd.append(await asyncio.open_connection("127.0.0.1", ports[0]))
            answer = await exchange(ports[0], b"GET /v2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            for _, writer in crowd:
                writer.close()
            return line, answer

    for files in ((1024, 1024), (1024, 4096)):
        line, answer = asyncio.run(run(files))
        m = READY.search(line)
        assert m is not None, line
        limit, http_cap, grpc_cap, metrics_cap = map(int, m.groups())
        assert limit == files[1], line
        assert 2 * http_cap + grpc_cap + 2 * metrics_cap + 64 <= limit, line
        assert http_cap >= 128 and grpc_cap >= 128, line
        # tritonserver is not there: the front's own answer, not a refusal at the connection cap
        assert status(answer) == 503 and b"server unavailable" in answer, answer[:200]


def half_sent(data: bytes) -> bytes:
    """An HTTP/2 connection's first bytes: a ModelInfer call and `data` of its message, its stream not ended."""
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    sid = client.get_next_available_stream_id()
    client.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":authority", "x"),
                              (":path", f"/{SERVICE}/ModelInfer"), ("content-type", "application/grpc")])
    client.send_data(sid, data)
    return client.data_to_send()


async def call_status(reader: asyncio.StreamReader) -> tuple[str, str]:
    """(grpc-status, grpc-message) of the first call answered on a connection, read frame by frame with no HTTP/2
    state of the reader's own (frames after a GOAWAY included), or ('', '') once the connection ends."""
    decoder = Decoder()
    async for frame in raw_frames(reader):
        if isinstance(frame, HeadersFrame):
            headers = {k.decode(): v.decode() for k, v in decoder.decode(frame.data, raw=True)}
            if "grpc-status" in headers:
                return headers["grpc-status"], headers.get("grpc-message", "")
    return "", ""


@asynccontextmanager
async def stand_in(delay_s: float) -> AsyncIterator[tuple[str, str, list[float]]]:
    """tritonserver's HTTP and gRPC endpoints answering an inference `delay_s` after it arrived: (http address,
    grpc address, the times inferences arrived)."""
    arrived: list[float] = []

    async def http_infer(request: web.Request) -> web.Response:
        await request.read()
        if request.path.endswith("/infer"):
            arrived.append(time.monotonic())
            await asyncio.sleep(delay_s)
        return web.json_response({})

    async def grpc_infer(raw: bytes, context: Any) -> bytes:
        arrived.append(time.monotonic())
        await asyncio.sleep(delay_s)
        return service_pb2.ModelInferResponse(model_name=TOP).SerializeToString()

    runner, http_port = await http_stand_in(http_infer)
    (grpc_port,) = free_ports(1)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(grpc_infer)}),))
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    try:
        yield f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", arrived
    finally:
        await server.stop(0)
        await runner.cleanup()


def test_a_stop_refuses_bodies_still_arriving_and_exits_soon_after_the_last_answer() -> None:
    """SIGINT with 8 requests in flight (4 HTTP, 4 gRPC), an idle keep-alive connection, a client that sent part
    of an HTTP body and one that sent part of a gRPC message: every request in flight is answered, the half-sent
    body gets 503 with `Connection: close` and the half-sent message UNAVAILABLE at once, and the front exits
    within 2 s of the last answer (the half-sent body held the stop until its 10 s body timeout)."""
    request = service_pb2.ModelInferRequest(model_name=TOP)
    request.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    request.raw_input_contents.append(b"\x05\x00\x00\x00video")
    message = request.SerializeToString()

    async def run() -> tuple[list[Any], bytes, tuple[str, str], float, float]:
        async with stand_in(delay_s=1.5) as (triton_http, triton_grpc, arrived), \
                front_process(triton_http, triton_grpc, shutdown_s=30.0) as (proc, ports, _):
            answered: list[float] = []

            async def http_call() -> int:
                answer = await exchange(ports[0], infer_head(len(BODY), "Connection: close") + BODY, timeout=30)
                answered.append(time.monotonic())
                return status(answer)

            async def grpc_call(channel: Any) -> str:
                try:
                    await channel.unary_unary(f"/{SERVICE}/ModelInfer")(message, timeout=30)
                    got = "OK"
                except grpc.aio.AioRpcError as e:
                    got = e.code().name
                answered.append(time.monotonic())
                return got

            idle = await asyncio.open_connection("127.0.0.1", ports[0])
            idle[1].write(b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert status(await asyncio.wait_for(idle[0].readuntil(b"}"), 10)) == 200
            half = await asyncio.open_connection("127.0.0.1", ports[0])
            half[1].write(infer_head(len(BODY) + 1000) + BODY)
            half_message = await asyncio.open_connection("127.0.0.1", ports[1])
            half_message[1].write(half_sent(prefix(len(message) + 1000) + message))
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}")
            calls = [asyncio.ensure_future(http_call()) for _ in range(4)]
            calls += [asyncio.ensure_future(grpc_call(channel)) for _ in range(4)]
            deadline = time.monotonic() + 30
            while len(arrived) < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(arrived) == 8, arrived
            proc.send_signal(signal.SIGINT)
            got = list(await asyncio.gather(*calls))
            refused = await asyncio.wait_for(half[0].read(), 10)
            message_refused = await asyncio.wait_for(call_status(half_message[0]), 10)
            code = await asyncio.to_thread(proc.wait, 30)
            exited = time.monotonic()
            assert code == 0, code
            assert await asyncio.wait_for(idle[0].read(), 5) == b"", "the idle connection outlived the stop"
            await channel.close()
            half_message[1].close()
            return got, refused, message_refused, exited - max(answered), exited - max(arrived)

    got, refused, message_refused, after_last, after_arrival = asyncio.run(run())
    assert got == [200] * 4 + ["OK"] * 4, got
    assert status(refused) == 503 and b"Connection: close" in refused and b"stopping" in refused, refused[:300]
    assert message_refused[0] == "14" and "stopping" in message_refused[1], message_refused  # UNAVAILABLE
    assert after_last < 2.0, (after_last, after_arrival)
