"""The gRPC port's calls: `Connection` (an HTTP/2 connection, `grpc_frames.FrameConnection`) opens a `Call` per
stream, takes its request message as it arrives, its buffer taken from the held-bytes budget before it grows (to at
most twice what arrived), passes the message on once whole and answers the call; `port` (`grpc.GrpcPort`) holds
what the connections share."""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import Awaitable
from typing import Protocol

import h2.errors
import h2.exceptions
from hyperframe.frame import GoAwayFrame

from videoitg.contract.access import GRPC_AUTHORIZATION, KeyStore
from videoitg.front.bounds import OVER_BUDGET, STOPPING, ByteBudget, WaitingCalls
from videoitg.front.config import KEEPALIVE_S, FrontConfig, FrontCounters
from videoitg.front.grpc_frames import MAX_FRAME, OUT_FRAME, FrameConnection
from videoitg.front.grpc_policy import GRPC_METHODS, SERVICE, grpc_message, grpc_timeout, key_exempt_grpc
from videoitg.front.policy import KEY_REFUSAL, GrpcCode, KeyOutcome, Reason, Refusal, key_outcome

DRAIN_PING = b"draining"
LAST_STREAM = 2**31 - 1
GRPC_TYPE = b"application/grpc"
COMPRESSED = "compressed messages are not accepted: send grpc-encoding identity"
ONE_MESSAGE = "a unary call carries exactly one request message"
_PREFIX = len(b"\0\0\0\0\0")  # a message's compressed flag and length


class Port(Protocol):
    """What a connection's calls share, on the gRPC port (`grpc.GrpcPort`)."""

    cfg: FrontConfig
    counters: FrontCounters
    budget: ByteBudget
    waiting: WaitingCalls
    connections: set[Connection]
    idle: dict[Connection, None]  # connections with no open call, the one idle longest first
    busy: int
    limit: int
    keys: KeyStore | None

    def refuse(self, call: Call, err: Refusal) -> None: ...

    def answered(self, task: asyncio.Task) -> None: ...

    def pass_on(self, method: str, message: bytes, remaining: float | None) -> Awaitable[bytes | tuple[int, str]]: ...


class Call:
    """One gRPC call: its request message as it arrives (the bytes taken from the budget, held until answered)."""

    __slots__ = ("conn", "sid", "method", "deadline", "start", "last", "prefix", "body", "received", "taken", "size",
                 "ended", "answered", "answering", "task")

    def __init__(self, conn: Connection, sid: int, method: str, now: float):
        self.conn, self.sid, self.method = conn, sid, method
        self.deadline: float | None = None  # from the call's grpc-timeout
        self.start = self.last = now
        self.prefix = b""  # the message's 5-byte prefix (compressed flag, length) as it arrives
        # The message after its prefix, as it arrives: a BytesIO hands over its buffer as the bytes grpcio's client
        # takes (getvalue), where a bytearray would be copied whole once more. The front grows its buffer in
        # doubling steps (`reserve`), not BytesIO an eighth at a frame: each growth is a reallocation.
        self.body = io.BytesIO()
        self.received = 0  # bytes of the message, its prefix included
        self.taken = 0  # of the budget: the length of its buffer
        self.size: int | None = None  # the message's length, once its prefix arrived
        self.ended = False  # the client's side is done (END_STREAM)
        self.answered = False
        self.answering = False  # its answer's headers are sent: what ends it now is trailers
        self.task: asyncio.Task | None = None


class Connection(FrameConnection):
    """One client connection: HTTP/2 frames in, gRPC calls out."""

    def __init__(self, port: Port):
        super().__init__(port.counters)
        self.port = port
        self.calls: dict[int, Call] = {}
        self.active = self.opened
        self.last_goaway = False  # the GOAWAY naming the last call taken is sent: a new call is refused
        port.connections.add(self)  # counted from its accept on: the cap holds for a burst of them
        port.idle[self] = None

    def never_made(self) -> None:
        """Its TLS handshake failed: the port forgets it (counted since its accept)."""
        self.closed = True
        self.port.connections.discard(self)
        self.port.idle.pop(self, None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.port.connections.discard(self)
        self.port.idle.pop(self, None)
        for call in list(self.calls.values()):
            if call.task is not None:
                call.task.cancel()
            self.drop(call)
        super().connection_lost(exc)

    def ping_acked(self, data: bytes) -> None:
        if data == DRAIN_PING:
            self.go_away()  # every call the client sent before it read the first GOAWAY has arrived

    # ---- calls ----
    def open(self, sid: int, headers: dict[bytes, bytes]) -> None:
        self.active = self.loop.time()
        self.port.idle.pop(self, None)
        path = headers.get(b":path", b"")
        service, _, method = path.decode("latin-1").lstrip("/").partition("/")
        deadline = grpc_timeout(headers.get(b"grpc-timeout"))
        call = Call(self, sid, method, self.active)
        self.calls[sid] = call
        if self.last_goaway:
            self.port.refuse(call, Refusal(STOPPING, Reason.STOPPING))
        elif self.port.keys is not None and not self.key_accepted(service, method, headers):
            self.port.refuse(call, KEY_REFUSAL)
        elif headers.get(b":method") != b"POST" or not headers.get(b"content-type", b"").startswith(GRPC_TYPE):
            self.port.refuse(call, Refusal("not a gRPC call (POST, content-type application/grpc)", Reason.ROUTE))
        elif service != SERVICE or method not in GRPC_METHODS:
            self.port.refuse(call, Refusal(f"Method not found: {path[:160].decode('latin-1')} is not served",
                                           Reason.ROUTE))
        elif headers.get(b"grpc-encoding", b"identity") != b"identity":
            self.port.refuse(call, Refusal(COMPRESSED, Reason.ENCODING))
        elif isinstance(deadline, Refusal):
            self.port.refuse(call, deadline)
        else:
            call.deadline = None if deadline is None else self.active + deadline
            if (displaced := self.port.waiting.arrive(call)) is not None:
                self.port.refuse(displaced, Refusal("the request message had not arrived when a newer call needed "
                                                    f"its place (at most {self.port.waiting.limit} calls wait for "
                                                    "theirs)", Reason.STALLED))

    def key_accepted(self, service: str, method: str, headers: dict[bytes, bytes]) -> bool:
        """Whether a call may go on as far as keys go (`policy.key_outcome`, as on HTTP), counted by outcome."""
        assert self.port.keys is not None
        if key_exempt_grpc(service, method):
            return True
        given = headers.get(GRPC_AUTHORIZATION.encode())
        outcome = key_outcome([] if given is None else [given.decode("latin-1")], self.port.keys)
        self.port.counters.key_checked("grpc", outcome)
        return outcome is KeyOutcome.ACCEPTED

    def data(self, sid: int, data: bytes, flow_controlled: int) -> None:
        self.h2.acknowledge_received_data(flow_controlled, sid)  # taken or dropped below, never left unread
        call = self.calls.get(sid)
        if call is None or call.answered or not data:
            return
        port = self.port
        call.received += len(data)
        call.last = self.loop.time()
        port.waiting.progress(call)
        rest = memoryview(data)
        if call.size is None:
            need = _PREFIX - len(call.prefix)
            call.prefix += rest[:need]
            rest = rest[need:]
            if len(call.prefix) < _PREFIX:
                return
            if call.prefix[0] != 0:
                port.refuse(call, Refusal(COMPRESSED, Reason.ENCODING))
                return
            call.size = int.from_bytes(call.prefix[1:], "big")
            if call.size > port.limit:
                port.refuse(call, Refusal(f"request message of {call.size} bytes is over the server's limit of "
                                          f"{port.limit} bytes", Reason.TOO_LARGE))
                return
        if call.received > _PREFIX + call.size:
            port.refuse(call, Refusal(ONE_MESSAGE, Reason.STRUCTURE))
            return
        if len(rest) and not self.reserve(call, call.received - _PREFIX):
            port.refuse(call, Refusal(OVER_BUDGET, Reason.OVERLOADED))
            return
        call.body.write(rest)

    def reserve(self, call: Call, need: int) -> bool:
        """Room for `need` bytes of `call`'s message in its buffer: grown to twice that, at most the message's length,
        the growth taken from the budget first (False when it does not fit). A buffer is thus at most twice the
        bytes that arrived, and exactly the message once it is whole, handed over as it is."""
        if need <= call.taken:
            return True
        assert call.size is not None
        grown = min(call.size, 2 * need)
        if not self.port.budget.take(grown - call.taken):
            return False
        at = call.body.tell()
        # A write past a BytesIO's end grows it to that end, zero-filled. On a growth of less than an eighth it
        # reserves an eighth more address space, which is never written here, so never made resident.
        call.body.seek(grown - 1)
        call.body.write(b"\0")
        call.body.seek(at)
        call.taken = grown
        return True

    def stream_ended(self, sid: int) -> None:
        call = self.calls.get(sid)
        if call is None or call.answered:
            return
        call.ended = True
        port = self.port
        port.waiting.leave(call)
        if call.size is None or call.received != _PREFIX + call.size:
            port.refuse(call, Refusal(ONE_MESSAGE, Reason.STRUCTURE))
        elif port.busy >= port.cfg.max_connections:
            port.refuse(call, Refusal(f"the server is answering its limit of {port.cfg.max_connections} calls; try "
                                      "again", Reason.OVERLOADED))
        else:
            message = call.body.getvalue()  # the BytesIO's own buffer, not a copy; still taken until answered
            call.body = io.BytesIO()
            port.busy += 1
            call.task = asyncio.ensure_future(self.answer(call, message))
            # Counted down when the task is done, however: a task cancelled before its first step (the client
            # reset the call, or went, in the bytes that completed it) never runs a line of `answer`.
            call.task.add_done_callback(port.answered)

    async def answer(self, call: Call, message: bytes) -> None:
        """Passes the message on and answers the call."""
        try:
            remaining = None if call.deadline is None else call.deadline - self.loop.time()
            result = await self.port.pass_on(call.method, message, remaining)
            del message
            if isinstance(result, bytes):
                await self.respond(call, result)
            else:
                self.end(call, *result)
        except (h2.exceptions.ProtocolError, ConnectionError):  # the stream or the connection went meanwhile
            self.drop(call)
        except asyncio.TimeoutError:  # the client let none of its answer go for KEEPALIVE_S
            self.port.counters.reject("grpc", Refusal("", Reason.READ_TIMEOUT))
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(call.sid, h2.errors.ErrorCodes.CANCEL)
            self.flush()
            self.drop(call)
        except Exception as e:  # a fault of the front's own: the call is still answered, never left open
            e.__traceback__ = None
            self.end(call, GrpcCode.INTERNAL, f"the front could not pass the call on ({type(e).__name__})")

    async def respond(self, call: Call, payload: bytes) -> None:
        self.release(call)  # the request is answered: its bytes go back to the budget
        self.h2.send_headers(call.sid, [(b":status", b"200"), (b"content-type", GRPC_TYPE)])
        call.answering = True
        head = b"\0" + len(payload).to_bytes(4, "big")
        if len(payload) < MAX_FRAME:  # with the headers and trailers one write
            await self.send(call.sid, head + payload)
        else:
            await self.send(call.sid, head)
            await self.send(call.sid, payload)
        if call.sid in self.calls:
            self.h2.send_headers(call.sid, [(b"grpc-status", b"0")], end_stream=True)
            self.flush()
            self.drop(call)

    async def send(self, sid: int, data: bytes) -> None:
        """`data` on stream `sid` as the client's flow-control windows and its reading allow: written frame by
        frame when it is more than one (a small answer goes out with its trailers, in one write). TimeoutError
        when the client let no byte of it go for KEEPALIVE_S."""
        view, at, waited_since = memoryview(data), 0, None
        while at < len(view):
            if sid not in self.calls or self.transport is None:
                raise ConnectionError("the call ended while its answer was sent")
            n = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size, OUT_FRAME, len(view) - at)
            if n <= 0 or self.paused_since is not None:
                self.flush()
                waited_since = waited_since or self.loop.time()
                left = waited_since + KEEPALIVE_S - self.loop.time()
                waiter = self.loop.create_future()
                self.waiters.append(waiter)
                await asyncio.wait_for(waiter, max(left, 0.0))  # TimeoutError (asyncio's, the builtin from 3.11)
                continue
            waited_since = None
            self.h2.send_data(sid, view[at:at + n])
            at += n
            if len(view) > MAX_FRAME:
                self.flush()

    def end(self, call: Call, code: int, text: str) -> None:
        """Answers `call` with a status and no message (trailers only); a client still sending is told to stop."""
        if call.sid not in self.calls:
            return
        call.answered = True
        self.port.waiting.leave(call)
        self.release(call)
        status = [(b"grpc-status", b"%d" % code), (b"grpc-message", grpc_message(text))]
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.send_headers(call.sid, status if call.answering else
                                 [(b":status", b"200"), (b"content-type", GRPC_TYPE), *status], end_stream=True)
            if not call.ended:
                self.h2.reset_stream(call.sid, h2.errors.ErrorCodes.NO_ERROR)
        self.flush()
        self.drop(call)

    def reset(self, sid: int) -> bool:
        """The client cancelled the call; True if it had not been answered."""
        call = self.calls.get(sid)
        if call is not None:
            if call.task is not None:
                call.task.cancel()
            self.drop(call)
        self.wake()
        return call is not None

    def release(self, call: Call) -> None:
        self.port.budget.give(call.taken)
        call.taken, call.body = 0, io.BytesIO()

    def drop(self, call: Call) -> None:
        """Forgets `call`, its bytes released."""
        call.answered = True
        self.port.waiting.leave(call)
        self.release(call)
        if self.calls.pop(call.sid, None) is not None:
            self.active = self.loop.time()
            if not self.calls and self.transport is not None:
                self.port.idle[self] = None  # idle from now on, the most recently

    # ---- the connection ----
    def drain(self) -> None:
        """The start of a graceful close (RFC 9113, section 6.8): GOAWAY naming the largest stream id, so the client
        opens no new call here while the calls it sent before reading it are still taken, then a PING: its answer
        comes after all of those, and `go_away` follows it."""
        self.flush()
        if self.transport is not None:
            self.transport.write(GoAwayFrame(0, last_stream_id=LAST_STREAM).serialize())
            self.h2.ping(DRAIN_PING)
            self.flush()

    def go_away(self) -> None:
        """GOAWAY naming the last call taken: a call after it is refused (UNAVAILABLE); the calls open go on. Written
        as a frame of its own: h2's `close_connection` would also refuse to send their answers."""
        if self.last_goaway:
            return
        self.last_goaway = True
        if self.transport is not None:
            self.transport.write(GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id).serialize())

    def check(self, now: float) -> None:
        if not self.settled and now - self.opened > KEEPALIVE_S:
            self.close()
        elif self.paused_since is not None and now - self.paused_since > KEEPALIVE_S:
            self.close(linger_s=0.0)  # it reads nothing: what is queued for it would never leave
        elif not self.calls and now - self.active > 4 * KEEPALIVE_S:
            self.go_away()
            self.close()
