"""The front's gRPC port: gRPC over HTTP/2 read frame by frame (`grpc_frames.py`, `grpc_calls.py`), every request
byte counted as it arrives.

A request message's buffer is taken from the front's held-bytes budget, shared with the HTTP port, before it grows
as its frames arrive (to at most twice what arrived); a message must keep arriving (a byte at least every
`body_idle_s`, and at the pace `bounds.body_time_left` sets), as an HTTP body must. grpcio's server hands a handler
a message only whole and holds what has arrived meanwhile with no bound the front could set, which is why this port
speaks HTTP/2 itself. The checks are `grpc_policy.py`'s; tritonserver is reached through grpcio's client, one
message each way as raw bytes (`grpc_upstream`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from tritonclient.grpc import service_pb2

from videoitg.contract.access import KeyStore
from videoitg.errors import bounded_text
from videoitg.front.bounds import STOPPING, ByteBudget, WaitingCalls, body_time_left, body_timeout
from videoitg.front.config import GRPC_INFER_KEY_HEADER, KEEPALIVE_S, FrontConfig, FrontCounters
from videoitg.front.connections import admitted
from videoitg.front.grpc_calls import Call, Connection
from videoitg.front.grpc_frames import cheap_data_frame_repr
from videoitg.front.grpc_policy import GRPC_METHODS, HEALTH_METHODS, SERVICE, grpc_checked
from videoitg.front.lost import InFlight, ModelLost, unreachable, while_away
from videoitg.front.policy import Reason, Refusal
from videoitg.front.tls import Certificates, Handshake

SWEEP_S = 0.5  # how often the time bounds are checked
# At a stop: how long the calls a client sent before it read the first GOAWAY have to arrive, unless its answer to
# the PING sent after that GOAWAY comes sooner.
DRAIN_S = 1.0
RECONNECT_MS = 500  # between two tries of the channel to tritonserver to connect again
LIVE = service_pb2.ServerLiveResponse(live=True).SerializeToString()

PassOn = Callable[[str, bytes, "float | None"], Awaitable["bytes | tuple[int, str]"]]


def grpc_upstream(cfg: FrontConfig, counters: FrontCounters, in_flight: InFlight) -> tuple[PassOn, Any]:
    """(pass_on, its grpcio channel): `pass_on(method, message, seconds left or None)` is tritonserver's answer, or
    the (status code, text) the client gets; a ModelInfer is checked by the policy first, then held until answered
    (`in_flight`: one its model's process took with it is answered UNAVAILABLE, `lost.py`)."""
    # Triton's full error text comes back (its own code, not RESOURCE_EXHAUSTED for a long one); clients get a
    # bounded text.
    # A tritonserver started again (same port) is reached within about RECONNECT_MS (grpcio's jitter: +-20 %), not
    # after its backoff of up to 120 s.
    channel = grpc.aio.insecure_channel(cfg.triton_grpc, options=[("grpc.max_send_message_length", -1),
                                                                   ("grpc.max_receive_message_length", -1),
                                                                   ("grpc.max_metadata_size", 1 << 20),
                                                                   ("grpc.initial_reconnect_backoff_ms", RECONNECT_MS),
                                                                   ("grpc.max_reconnect_backoff_ms", RECONNECT_MS)])
    calls = {m: channel.unary_unary(f"/{SERVICE}/{m}") for m in GRPC_METHODS}  # raw bytes both ways
    key = ((GRPC_INFER_KEY_HEADER, cfg.infer_key),) if cfg.infer_key else None

    async def pass_on(method: str, raw: bytes, remaining: float | None) -> bytes | tuple[int, str]:
        model = ""
        if method == "ModelInfer":
            err, model = grpc_checked(raw, cfg.models, cfg.max_inputs, cfg.max_outputs)
            if err is not None:
                counters.reject("grpc", err)
                return err.reason.grpc, err
        bound = (cfg.infer_timeout_s if method == "ModelInfer" else
                 cfg.health_timeout_s if method in HEALTH_METHODS else cfg.pass_timeout_s)
        timeout = bound if remaining is None else min(remaining, bound)
        try:
            if method == "ServerLive" and in_flight.restarting:  # the launcher is starting tritonserver again
                return LIVE
            if method != "ModelInfer":
                return await calls[method](raw, timeout=timeout)
            held = in_flight.hold(model)
            held.sent()  # unary: the message goes whole
            return await held.race(calls[method](raw, timeout=timeout, metadata=key))
        except ModelLost as e:  # the model's process died with it: send it again
            counters.unavailable["grpc"] += 1
            return grpc.StatusCode.UNAVAILABLE.value[0], str(e)
        except grpc.aio.AioRpcError as e:
            e.__traceback__ = None  # it would hold the call's frames, and so the message
            code, details = e.code(), e.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and (remaining is None or remaining > bound):
            code, details = grpc.StatusCode.UNAVAILABLE, f"no answer from the server within {bound:.0f} s"
        if model and (away := while_away(model, details)):
            code, details = grpc.StatusCode.UNAVAILABLE, away
        elif code == grpc.StatusCode.UNAVAILABLE and (gone := unreachable(details)):
            details = gone
        if code == grpc.StatusCode.UNAVAILABLE:
            counters.unavailable["grpc"] += 1
        return code.value[0], bounded_text(details)

    return pass_on, channel


class GrpcPort:
    """The listening gRPC port: at most `max_connections` connections (past it, the one with no open call idle
    longest is ended, GOAWAY and closed, to take a new one; with none idle the new one is closed at once), at most
    as many calls waiting for their message (a new call past it ends the one that has gone longest without a byte:
    `stalled`) and as many answered at once (`overloaded`). With `keys`, a call without one of them is ended
    UNAUTHENTICATED as it opens (`grpc_calls.Connection.open`), but liveness and readiness; with `certs`, TLS (ALPN
    h2), a connection counted from its accept, its handshake within KEEPALIVE_S."""

    def __init__(self, cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget,
                 in_flight: InFlight | None = None, keys: KeyStore | None = None,
                 certs: Certificates | None = None):
        self.cfg, self.counters, self.budget = cfg, counters, budget
        self.keys, self.certs = keys, certs
        self.limit = min(cfg.max_request_bytes, 2**31 - 1)  # a gRPC message's length is 32 bits
        self.waiting = WaitingCalls(cfg.max_connections)
        self.busy = 0
        self.connections: set[Connection] = set()
        self.idle: dict[Connection, None] = {}  # connections with no open call, the one idle longest first
        self.server: asyncio.Server | None = None
        self.sweeper: asyncio.Task | None = None
        self.in_flight = in_flight or InFlight()  # its ModelInfer calls until answered (lost.py)
        self.pass_on, self.channel = grpc_upstream(cfg, counters, self.in_flight)

    async def start(self) -> None:
        cheap_data_frame_repr()
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, self.cfg.host or None, self.cfg.grpc_port,
                                               reuse_address=True)
        self.sweeper = asyncio.ensure_future(self._sweep())

    def _protocol(self) -> asyncio.Protocol:
        if not admitted(len(self.connections), self.cfg.max_connections, self._evict, self.counters, "grpc"):
            return _Closed()
        conn = Connection(self)
        if self.certs is None:
            return conn
        return Handshake(conn, self.certs.context("grpc"), KEEPALIVE_S, lambda ok: ok or conn.never_made())

    def _evict(self) -> bool:
        """Ends the connection idle longest: no open call, no partial frame waiting to be read. GOAWAY naming the
        last call it took, so its client knows none of its later calls was taken, then closed. False when none is
        idle."""
        while self.idle:
            conn = next(iter(self.idle))
            del self.idle[conn]
            if conn.calls or conn.inbox or conn.closed or conn.transport is None:
                continue
            conn.go_away()
            conn.close()
            return True
        return False

    async def stop(self, grace: float) -> None:
        """No new connection; on each one a graceful GOAWAY (`Connection.drain`), so the calls a client sent before
        it read it are still taken; a call whose message is still arriving is refused at once (UNAVAILABLE: send it
        again), and so is one whose message has not all arrived when the last GOAWAY goes out; the calls in flight
        get `grace` seconds, then every connection closes."""
        if self.server is not None:
            self.server.close()
        self._refuse_waiting()
        for conn in list(self.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        drained = min(end, loop.time() + DRAIN_S)
        while any(not c.last_goaway for c in self.connections) and loop.time() < drained:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.go_away()
        self._refuse_waiting()
        while any(c.calls for c in self.connections) and loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
        await self.channel.close()

    def _refuse_waiting(self) -> None:
        for call in list(self.waiting.calls):
            self.refuse(call, Refusal(STOPPING, Reason.STOPPING))

    def answered(self, task: asyncio.Task) -> None:
        """A call's answering task is done (answered, failed or cancelled, run or not): one fewer being answered."""
        self.busy -= 1

    def refuse(self, call: Call, err: Refusal) -> None:
        """Ends `call` with its refusal's gRPC code, counted as the client's fault (unless the reason is not)."""
        self.counters.reject("grpc", err)
        call.conn.end(call, err.reason.grpc, err)

    async def _sweep(self) -> None:
        """The time bounds: a message's next byte within `body_idle_s`, and its pace (`body_time_left`: the front
        reads a message whole before passing it on, so all of its time is spent waiting for the client); a
        connection's handshake within KEEPALIVE_S; an idle connection, or one whose client reads nothing of what
        it is sent, closed after 4 x KEEPALIVE_S and KEEPALIVE_S."""
        loop = asyncio.get_running_loop()
        idle_s = self.cfg.body_idle_s
        while True:
            await asyncio.sleep(SWEEP_S)
            now = loop.time()
            for call in list(self.waiting.calls):
                stalled = now - call.last > idle_s
                if stalled or body_time_left(now - call.start, call.received) < 0:
                    self.refuse(call, body_timeout("request message", idle_s if stalled else None))
            for conn in list(self.connections):
                conn.check(now)


class _Closed(asyncio.Protocol):
    """A connection past the cap: closed at once, so it holds no file descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()
