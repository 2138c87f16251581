"""`videoitg.front.lost`: the public inferences a model's instance held when it was unloaded for a repair (its stub
died, or was killed) are answered by the front at the launcher's notice, 503 / UNAVAILABLE naming what happened,
counted; other models' requests, requests whose body is still arriving and later ones are passed on as usual (no
tritonserver: stand-ins in its place; the served case: tests/python_backend/test_videoitg_bls_faults.py)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

grpc = pytest.importorskip("grpc", reason="the serve extra is not installed")

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from tritonclient.grpc import service_pb2  # noqa: E402

from tests.support.front import grpc_front, http_stand_in, outcome  # noqa: E402
from tests.support.server import settled  # noqa: E402
from videoitg.contract.protocol import TOP  # noqa: E402
from videoitg.front import config  # noqa: E402
from videoitg.front.grpc import GrpcPort  # noqa: E402
from videoitg.front.grpc_policy import SERVICE, grpc_checked  # noqa: E402
from videoitg.front.http import HttpPort  # noqa: E402
from videoitg.front.lost import (  # noqa: E402
    AWAY,
    FULL,
    LOST,
    RESTARTED,
    RESTARTING,
    InFlight,
    ModelLost,
    WatchedUpstream,
    notice,
    unreachable,
    while_away,
)
from videoitg.launch.ports import free_ports  # noqa: E402

SAID = LOST.format(model=TOP)
BODY = b'{"inputs": [{"name": "INSTRUCTION", "datatype": "BYTES", "shape": [1, 1], "data": ["when?"]}]}'


class Held:
    """A stand-in for tritonserver's HTTP endpoint that holds every inference until `release` (as a model's stub
    does while it works), answering everything else at once."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        if request.path.endswith("/infer"):
            await request.read()
            self.arrived += 1
            await self.release.wait()
        return web.json_response({"model_name": request.path.split("/")[3] if "/models/" in request.path else ""})


async def post(port: int, path: str = f"/v2/models/{TOP}/infer") -> tuple[int, dict[str, Any], dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write((f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(BODY)}"
                  "\r\n\r\n").encode() + BODY)
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), json.loads(await reader.readexactly(int(headers["Content-Length"]))), headers
    finally:
        writer.close()


def test_http_requests_a_model_lost_are_answered_at_once_and_the_rest_pass_on() -> None:
    """Catches: a request held by the public model's stub when it died waited for the front's 300 s bound."""

    async def run() -> None:
        upstream = Held()
        runner, up_port = await http_stand_in(upstream.handle)
        cfg = config.FrontConfig(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0,
                                 triton_http=f"127.0.0.1:{up_port}", triton_grpc="", triton_metrics="",
                                 models=(TOP, "other"), max_request_bytes=1 << 20)
        counters, in_flight = config.FrontCounters(), InFlight()
        port = HttpPort(cfg, counters, config.held_budget(cfg), in_flight=in_flight)
        await port.start()
        try:
            mine = [asyncio.ensure_future(post(port.port)) for _ in range(2)]
            other = asyncio.ensure_future(post(port.port, "/v2/models/other/infer"))
            assert await settled(lambda: upstream.arrived == 3, 10)
            assert in_flight.lost(TOP) == 2
            for status, body, headers in await asyncio.wait_for(asyncio.gather(*mine), 5):
                assert (status, body, headers.get("Retry-After")) == (503, {"error": SAID}, "1")
            assert counters.unavailable["http"] == 2 and not other.done()  # another model's request: still held
            later = asyncio.ensure_future(post(port.port))  # after the notice: passed on as usual
            assert await settled(lambda: upstream.arrived == 4, 10)
            upstream.release.set()
            assert (await asyncio.wait_for(later, 5))[:2] == (200, {"model_name": TOP})
            assert (await asyncio.wait_for(other, 5))[:2] == (200, {"model_name": "other"})
            assert in_flight.lost(TOP) == 0 and counters.unavailable["http"] == 2  # nothing left held
        finally:
            await port.stop()
            await runner.cleanup()

    asyncio.run(run())


def test_a_body_still_arriving_is_held_only_once_it_is_whole_at_tritonserver() -> None:
    """A request whose body had not all been passed on when the model's instance went reaches the next instance:
    it is not answered as lost."""

    async def run() -> None:
        upstream = Held()
        runner, up_port = await http_stand_in(upstream.handle)
        in_flight, more = InFlight(), asyncio.Event()
        watched = WatchedUpstream(f"127.0.0.1:{up_port}", in_flight)

        async def body() -> AsyncIterator[bytes]:
            yield BODY[:10]
            await more.wait()
            yield BODY[10:]

        try:
            call = asyncio.ensure_future(watched.request(
                "POST", f"/v2/models/{TOP}/infer", {"Content-Length": str(len(BODY))}, body(), 10))
            await asyncio.sleep(0.2)
            assert in_flight.lost(TOP) == 0 and not call.done()
            more.set()
            assert await settled(lambda: upstream.arrived == 1, 10)
            assert in_flight.lost(TOP) == 1
            with pytest.raises(ModelLost, match=SAID):
                await asyncio.wait_for(call, 5)
            health = await watched.request("GET", "/v2/health/ready", {}, None, 5)  # never held
            assert health.status == 200
        finally:
            watched.close()
            await runner.cleanup()

    asyncio.run(run())


def _infer_request(model: str) -> bytes:
    req = service_pb2.ModelInferRequest(model_name=model, id="a-request-id")
    req.inputs.add(name="VIDEO", datatype="BYTES", shape=[1, 1])
    req.raw_input_contents.append(b"\x01\x00\x00\x00v")
    return req.SerializeToString()


def test_grpc_calls_a_model_lost_end_unavailable_naming_it() -> None:
    async def run() -> tuple[list[str], int, int, str]:
        gate, arrived = asyncio.Event(), []

        async def infer(raw: bytes, context: Any) -> bytes:
            arrived.append(raw)
            await gate.wait()
            return service_pb2.ModelInferResponse(model_name=TOP).SerializeToString()

        async with grpc_front({"ModelInfer": infer}) as (target, counters, port), \
                grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(f"/{SERVICE}/ModelInfer")
            held = [asyncio.ensure_future(outcome(call(_infer_request(TOP)))) for _ in range(2)]
            assert await settled(lambda: len(arrived) == 2, 10)
            n = port.in_flight.lost(TOP)
            ended = await asyncio.wait_for(asyncio.gather(*held), 5)
            later = asyncio.ensure_future(outcome(call(_infer_request(TOP))))  # after the notice: as usual
            assert await settled(lambda: len(arrived) == 3, 10)
            gate.set()
            return ended, n, counters.unavailable["grpc"], await later

    ended, n, counted, later = asyncio.run(run())
    assert ended == [f"UNAVAILABLE: {SAID}"] * 2 and n == counted == 2 and later == "OK"


def test_the_launchers_notices_end_what_they_name_and_nothing_else_does() -> None:
    async def run() -> list[bool]:
        in_flight = InFlight()
        loop = asyncio.get_running_loop()
        futures = {m: loop.create_future() for m in (TOP, "other")}
        for m, f in futures.items():
            in_flight.models[m] = {f}
        r, w = os.pipe()
        with open(r, "rb", buffering=0) as pipe:
            reader = asyncio.ensure_future(in_flight.read_notices(pipe))
            os.write(w, b"x" * 5000 + b"\n" + b"lost" + b"\n" + notice("nobody") + b"lost " + TOP.encode())
            await asyncio.sleep(0.2)
            before = futures[TOP].done()  # a line not yet whole is no notice
            os.write(w, b"\n")
            assert await settled(futures[TOP].done, 5)
            os.close(w)
            await asyncio.wait_for(reader, 5)  # its end: the launcher closed the pipe
        return [before, futures[TOP].done(), futures["other"].done()]

    assert asyncio.run(run()) == [False, True, False]


def test_the_model_of_a_grpc_request_is_the_one_its_checks_read() -> None:
    """What a gRPC inference is held under: the model name the policy checked (`grpc_checked`), wherever the field
    lies in the message."""
    assert grpc_checked(_infer_request(TOP), (TOP, "other")) == (None, TOP)
    req = service_pb2.ModelInferRequest(model_name="other", model_version="3")
    req.inputs.add(name="X", datatype="BYTES", shape=[1, 1])
    req.parameters["priority"].int64_param = 2
    assert grpc_checked(req.SerializeToString(), (TOP, "other")) == (None, "other")
    # fields in any order: model_name last
    moved = req.SerializeToString().replace(b"\n\x05other", b"") + b"\n\x05other"
    assert grpc_checked(moved, (TOP, "other")) == (None, "other")
    assert grpc_checked(b"", (TOP,))[1] == ""


def test_tritonservers_words_for_a_model_that_cannot_take_a_request_now() -> None:
    """Catches: a request past the model's bounded queue got tritonserver's "[request id: <id_unknown>] Exceeds
    maximum queue size", naming nothing, and one sent while the model was loaded again a 404 "unknown model"."""
    assert while_away(TOP, "[request id: <id_unknown>] Exceeds maximum queue size") == FULL.format(model=TOP)
    assert while_away(TOP, f"Request for unknown model: '{TOP}' has no available versions") == AWAY.format(model=TOP)
    assert while_away(TOP, "videoitg_decode: StepUnavailableError: ...") is None
    # a step's full queue, passed on by the model, names the step: left as it is
    assert while_away(TOP, "videoitg_decode: StepUnavailableError: Exceeds maximum queue size") is None
    assert while_away(TOP, "Request for unknown model: 'videoitg_decode' has no available versions") is None
    assert while_away(TOP, "Request for unknown model: 'x' is not found") is None
    # its stub died under the request, in tritonserver's words (the instance's name): lost, try again
    assert while_away(TOP, f"Stub process '{TOP}_0_0' is not healthy.") == LOST.format(model=TOP)
    assert while_away(TOP, "Stub process 'videoitg_decode_0_0' is not healthy.") is None


def test_a_full_queue_is_unavailable_naming_the_model_on_both_protocols() -> None:
    """The front's answer where tritonserver refused a request past the model's queue bound (its own words, as it
    sends them: HTTP 503, gRPC UNAVAILABLE)."""
    full = FULL.format(model=TOP)

    async def http_full(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"error": "[request id: <id_unknown>] Exceeds maximum queue size"}, status=503)

    async def grpc_full(raw: bytes, context: Any) -> bytes:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "[request id: <id_unknown>] Exceeds maximum queue size")
        return b""

    async def run() -> tuple[tuple[int, dict[str, Any], str | None], str]:
        runner, up_port = await http_stand_in(http_full)
        cfg = config.FrontConfig(host="127.0.0.1", http_port=0, grpc_port=0, metrics_port=0,
                                 triton_http=f"127.0.0.1:{up_port}", triton_grpc="", triton_metrics="",
                                 models=(TOP,), max_request_bytes=1 << 20)
        port = HttpPort(cfg, config.FrontCounters(), config.held_budget(cfg))
        await port.start()
        try:
            status, body, headers = await post(port.port)
        finally:
            await port.stop()
            await runner.cleanup()
        async with grpc_front({"ModelInfer": grpc_full}) as (target, _counters, _port), \
                grpc.aio.insecure_channel(target) as channel:
            ended = await outcome(channel.unary_unary(f"/{SERVICE}/ModelInfer")(_infer_request(TOP)))
        return (status, body, headers.get("Retry-After")), ended

    http_said, grpc_said = asyncio.run(run())
    assert http_said == (503, {"error": full}, "1") and grpc_said == f"UNAVAILABLE: {full}"


def test_grpcs_words_for_a_tritonserver_out_of_reach_become_the_fronts_and_nothing_else_does() -> None:
    for details in ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: Failed to connect to "
                    "remote host: Connection refused", "Socket closed", "recvmsg:Connection reset by peer"):
        said = unreachable(details)
        assert said is not None and said.startswith("server unavailable: tritonserver did not answer (")
        assert details in said and said.endswith("); try again")
    for details in ("Exceeds maximum queue size", "videoitg_decode: StepUnavailableError: busy", "",
                    "videoitg_decode: StepUnavailableError: Connection reset by its reader"):
        assert unreachable(details) is None


def test_liveness_is_the_fronts_own_while_the_launcher_starts_tritonserver_again() -> None:
    """Catches: while supervision started tritonserver again behind the running front (a minute on a GPU, its
    engines loading), the front answered liveness 503 / UNAVAILABLE "tritonserver did not answer", so a liveness
    probe (deploy/k8s: 6 failures 10 s apart) restarted the pod in the middle of the repair. Between the launcher's
    two notices liveness is the front's own, on both protocols; readiness stays tritonserver's throughout."""
    http_up, grpc_up = free_ports(2)  # nothing listens there: tritonserver is down

    async def look(http: HttpPort, channel: Any) -> tuple[int, int, str]:
        async with aiohttp.ClientSession() as session:
            got = []
            for path in ("/v2/health/live", "/v2/health/ready"):
                async with session.get(f"http://127.0.0.1:{http.port}{path}") as r:
                    got.append(r.status)
        try:
            raw = await channel.unary_unary(f"/{SERVICE}/ServerLive")(
                service_pb2.ServerLiveRequest().SerializeToString(), timeout=5)
            live = f"live={service_pb2.ServerLiveResponse.FromString(raw).live}"
        except grpc.aio.AioRpcError as e:
            live = e.code().name
        return got[0], got[1], live

    async def run() -> list[tuple[int, int, str]]:
        in_flight = InFlight()
        cfg = config.FrontConfig(host="127.0.0.1", http_port=0, grpc_port=free_ports(1)[0], metrics_port=0,
                                 triton_http=f"127.0.0.1:{http_up}", triton_grpc=f"127.0.0.1:{grpc_up}",
                                 triton_metrics="", models=(TOP,), max_request_bytes=1 << 20)
        counters, budget = config.FrontCounters(), config.held_budget(cfg)
        http, grpc_port = HttpPort(cfg, counters, budget, in_flight=in_flight), GrpcPort(cfg, counters, budget,
                                                                                         in_flight)
        await http.start()
        await grpc_port.start()
        r, w = os.pipe()
        looks = []
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{cfg.grpc_port}") as channel:
                with open(r, "rb", buffering=0) as pipe:
                    reader = asyncio.ensure_future(in_flight.read_notices(pipe))
                    looks.append(await look(http, channel))
                    os.write(w, RESTARTING)
                    assert await settled(lambda: in_flight.restarting, 5)
                    looks.append(await look(http, channel))
                    os.write(w, RESTARTED)
                    assert await settled(lambda: not in_flight.restarting, 5)
                    looks.append(await look(http, channel))
                    os.close(w)
                    await asyncio.wait_for(reader, 5)
        finally:
            await grpc_port.stop(0)
            await http.stop()
        return looks

    down = (503, 503, "UNAVAILABLE")
    assert asyncio.run(run()) == [down, (200, 503, "live=True"), down]
