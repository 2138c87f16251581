"""The front's gRPC port: gRPC over HTTP/2 (the `h2` protocol library), every request byte counted as it arrives.

A request message's buffer is taken from the front's held-bytes budget, shared with the HTTP port, before it grows
as its frames arrive (to at most twice what arrived); a message must keep arriving (a byte at least every
`body_idle_s`, and at the pace `front.body_time_left` sets), as an HTTP body must. grpcio's server hands a handler
a message only whole and holds what has arrived meanwhile with no bound the front could set, which is why this port
speaks HTTP/2 itself. The policy is front.py's; tritonserver is reached through grpcio's client, one message each way as
raw bytes (`grpc_upstream`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from collections.abc import Awaitable, Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame, GoAwayFrame

from videoitg.serving.front import (
    GRPC_METHODS,
    KEEPALIVE_S,
    OVER_BUDGET,
    SERVICE,
    ByteBudget,
    FrontConfig,
    FrontCounters,
    Refusal,
    WaitingCalls,
    body_time_left,
    body_timeout,
    bounded_text,
    grpc_message_error,
)

# gRPC status codes (grpc/doc/statuscodes.md)
INVALID_ARGUMENT, DEADLINE_EXCEEDED, NOT_FOUND, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE = (
    3, 4, 5, 8, 12, 13, 14)
REFUSAL_CODES = {"route": NOT_FOUND, "header_size": RESOURCE_EXHAUSTED}  # a refused ModelInfer's, by reason;
# INVALID_ARGUMENT for the rest
STREAMS_PER_CONNECTION = 128  # SETTINGS_MAX_CONCURRENT_STREAMS
STREAM_WINDOW = 1 << 20  # the initial window of a stream: what a client may send ahead of the front's reading
CONNECTION_WINDOW = 4 << 20
MAX_FRAME = 64 << 10  # SETTINGS_MAX_FRAME_SIZE: fewer, larger DATA frames than HTTP/2's default 16 KiB
MAX_METADATA = 8 << 10  # SETTINGS_MAX_HEADER_LIST_SIZE, and what the decoder takes (grpcio's own default)
SWEEP_S = 0.5  # how often the time bounds are checked
# A connection's frames go to h2 at most FRAMES_PER_TURN per turn of the event loop, the rest on the next turn with
# the socket unread meanwhile: h2 parses in Python, and 256 KiB read at once can be ten thousand small frames.
FRAMES_PER_TURN = 128
HEADER_BYTES_PER_TURN = 4 << 10  # and at most this much header block: HPACK decodes a header field per byte or two
# Frames that neither carry request bytes nor open or end a call (PING, SETTINGS, RST_STREAM, WINDOW_UPDATE,
# PRIORITY, empty DATA, DATA on a closed stream, unknown types), beyond CALL_FRAMES for each call opened (a gRPC
# client sends a WINDOW_UPDATE or two a call), a call the client cancels before its answer taking back all but one
# of those (a rapid reset, a call opened and cancelled at once, is one frame too many): more than FLOOD_FRAMES of
# them within FLOOD_WINDOW_S
# and the connection is told to calm down (GOAWAY ENHANCE_YOUR_CALM) and closed, counted `flood`. So is a
# connection's SETTINGS frame past MAX_SETTINGS_FRAMES or over SETTINGS_BYTES (h2 keeps every setting id it is sent,
# and walks them all on each SETTINGS frame).
FLOOD_FRAMES = 1024
FLOOD_WINDOW_S = 10.0
CALL_FRAMES = 3
MAX_SETTINGS_FRAMES = 64
SETTINGS_BYTES = 16 * 6  # six bytes a setting: HTTP/2 defines 7 of them
ABORT_AFTER_S = 1.0  # a connection closed for a fault is aborted this long after, its last frames sent or not
# At a stop: how long the calls a client sent before it read the first GOAWAY have to arrive, unless its answer to
# the PING sent after that GOAWAY comes sooner.
DRAIN_S = 1.0
DRAIN_PING = b"draining"
LAST_STREAM = 2**31 - 1
_DATA, _HEADERS, _SETTINGS, _CONTINUATION = 0x0, 0x1, 0x4, 0x9  # frame types
_PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_FRAME_HEADER = 9
_TIMEOUT = re.compile(rb"([0-9]{1,8})([HMSmun])")  # grpc-timeout, as the gRPC HTTP/2 protocol defines it
_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
GRPC_TYPE = b"application/grpc"
COMPRESSED = "compressed messages are not accepted: send grpc-encoding identity"
ONE_MESSAGE = "a unary call carries exactly one request message"
_PREFIX = len(b"\0\0\0\0\0")  # a message's compressed flag and length

# h2 logs every frame it receives with repr(frame), built whatever the logger, and hyperframe's repr of a DATA frame
# serializes and hexlifies all of its payload before cutting it to 20 characters: as much CPU as the rest of h2's
# reading of a message. The repr here names the payload's length instead.
DataFrame._body_repr = lambda self: f"data=<{len(self.data)} bytes>"  # type: ignore[method-assign]

PassOn = Callable[[str, bytes, "float | None"], Awaitable["bytes | tuple[int, str]"]]


def grpc_timeout(value: bytes | None) -> float | None | Refusal:
    """Seconds of a `grpc-timeout` header (None without one), or why it is malformed."""
    if value is None:
        return None
    if (m := _TIMEOUT.fullmatch(value)) is None:
        return Refusal(f"malformed grpc-timeout {value[:16]!r}", "structure")
    return int(m.group(1)) * _UNITS[m.group(2)]


def grpc_message(text: str) -> bytes:
    """`grpc-message`: UTF-8, percent-encoded outside printable ASCII and for '%' itself."""
    return b"".join(bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in text.encode())


def grpc_upstream(cfg: FrontConfig, counters: FrontCounters) -> tuple[PassOn, Any]:
    """(pass_on, its grpcio channel): `pass_on(method, message, seconds left or None)` is tritonserver's answer, or
    the (status code, text) the client gets; a ModelInfer is checked by the policy first."""
    import grpc

    # Triton's full error text comes back (its own code, not RESOURCE_EXHAUSTED for a long one); clients get a
    # bounded text.
    channel = grpc.aio.insecure_channel(cfg.triton_grpc, options=[("grpc.max_send_message_length", -1),
                                                                   ("grpc.max_receive_message_length", -1),
                                                                   ("grpc.max_metadata_size", 1 << 20)])
    calls = {m: channel.unary_unary(f"/{SERVICE}/{m}") for m in GRPC_METHODS}  # raw bytes both ways

    async def pass_on(method: str, raw: bytes, remaining: float | None) -> bytes | tuple[int, str]:
        if method == "ModelInfer" and (err := grpc_message_error(raw, cfg.models, cfg.max_inputs,
                                                                cfg.max_outputs)) is not None:
            counters.reject("grpc", err)
            return REFUSAL_CODES.get(err.reason, INVALID_ARGUMENT), err
        bound = cfg.infer_timeout_s if method == "ModelInfer" else cfg.pass_timeout_s
        try:
            return await calls[method](raw, timeout=bound if remaining is None else min(remaining, bound))
        except grpc.aio.AioRpcError as e:
            e.__traceback__ = None  # it would hold the call's frames, and so the message
            code, details = e.code(), e.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and (remaining is None or remaining > bound):
            code, details = grpc.StatusCode.UNAVAILABLE, f"no answer from the server within {bound:.0f} s"
        if code == grpc.StatusCode.UNAVAILABLE:
            counters.unavailable["grpc"] += 1
        return code.value[0], bounded_text(details)

    return pass_on, channel


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


class GrpcPort:
    """The listening gRPC port: at most `max_connections` connections (past it, closed at once), at most as many
    calls waiting for their message (a new call past it ends the one that has gone longest without a byte:
    `stalled`) and as many answered at once (`overloaded`)."""

    def __init__(self, cfg: FrontConfig, counters: FrontCounters, budget: ByteBudget):
        self.cfg, self.counters, self.budget = cfg, counters, budget
        self.limit = min(cfg.max_request_bytes, 2**31 - 1)  # a gRPC message's length is 32 bits
        self.waiting = WaitingCalls(cfg.max_connections)
        self.busy = 0
        self.connections: set[Connection] = set()
        self.server: asyncio.Server | None = None
        self.sweeper: asyncio.Task | None = None
        self.pass_on, self.channel = grpc_upstream(cfg, counters)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(self._protocol, self.cfg.host or None, self.cfg.grpc_port,
                                               reuse_address=True)
        self.sweeper = asyncio.ensure_future(self._sweep())

    def _protocol(self) -> asyncio.Protocol:
        if len(self.connections) >= self.cfg.max_connections:
            self.counters.reject("grpc", Refusal("", "connections"))
            return _Closed()
        return Connection(self)

    async def stop(self, grace: float) -> None:
        """No new connection; on each one a graceful GOAWAY (`Connection.drain`), so the calls a client sent before
        it read it are still taken; the calls in flight get `grace` seconds, then every connection closes."""
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.drain()
        loop = asyncio.get_running_loop()
        end = loop.time() + grace
        drained = min(end, loop.time() + DRAIN_S)
        while any(not c.last_goaway for c in self.connections) and loop.time() < drained:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.go_away()
        while any(c.calls for c in self.connections) and loop.time() < end:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        if self.sweeper is not None:
            self.sweeper.cancel()
        await self.channel.close()

    def answered(self, task: asyncio.Task) -> None:
        """A call's answering task is done (answered, failed or cancelled, run or not): one fewer being answered."""
        self.busy -= 1

    def refuse(self, call: Call, code: int, text: str, reason: str | None) -> None:
        if reason is not None:
            self.counters.reject("grpc", Refusal(text, reason))
        call.conn.end(call, code, text)

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
                    err = body_timeout("request message", idle_s if stalled else None)
                    self.refuse(call, DEADLINE_EXCEEDED, err, err.reason)
            for conn in list(self.connections):
                conn.check(now)


class _Closed(asyncio.Protocol):
    """A connection past the cap: closed at once, so it holds no file descriptor."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Connection(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, gRPC calls out."""

    def __init__(self, port: GrpcPort):
        self.port = port
        # The front's own headers go out unchecked (they are constants and numbers); a client's are checked.
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False))
        self.calls: dict[int, Call] = {}
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.opened = self.active = self.loop.time()
        self.settled = False  # the client's preface and SETTINGS arrived
        self.paused_since: float | None = None  # the client reads nothing of what it is sent
        self.waiters: list[asyncio.Future] = []  # writers waiting for flow-control window or a drained transport
        self.inbox = bytearray()  # bytes read, not yet given to h2
        self.fed_preface = False
        self.backlogged = False  # whole frames wait in the inbox for the next turn
        self.header_block = 0  # bytes of the header block being received (HEADERS, then CONTINUATION frames)
        self.settings_frames = 0
        self.closed = False
        self.last_goaway = False  # the GOAWAY naming the last call taken is sent: a new call is refused
        self.idle_frames, self.window_start = 0, self.opened  # frames carrying nothing, in the current window
        port.connections.add(self)  # counted from its accept on: the cap holds for a burst of them

    # ---- asyncio ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # The front's settings in its first SETTINGS frame, in force from the start: a client may use them once it
        # has read them, before its acknowledgement reaches the front.
        codes = h2.settings.SettingCodes
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            codes.MAX_CONCURRENT_STREAMS: STREAMS_PER_CONNECTION, codes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            codes.MAX_FRAME_SIZE: MAX_FRAME, codes.MAX_HEADER_LIST_SIZE: MAX_METADATA})
        self.h2.max_inbound_frame_size = MAX_FRAME
        self.h2.decoder.max_header_list_size = MAX_METADATA
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - self.h2.inbound_flow_control_window)
        self.flush()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.inbox or self.backlogged:
            self.inbox += data
            if not self.backlogged:
                self.feed()
        else:
            self.feed(data)  # whole frames go to h2 straight from what was read; only a partial one is kept

    def feed(self, data: bytes | None = None) -> None:
        """Up to FRAMES_PER_TURN whole frames of `data` (else of the inbox) to h2, a frame's length being its first
        3 bytes; what is left waits in the inbox, and if whole frames are among it, for the next turn of the loop,
        the socket unread until the inbox is worked off."""
        if self.closed:
            return
        buf = self.inbox if data is None else data
        end, frames, header_bytes = 0, 0, 0
        if not self.fed_preface:
            if len(buf) < _PREFACE:
                if data is not None:
                    self.inbox += data
                return
            end, self.fed_preface = _PREFACE, True
        while frames < FRAMES_PER_TURN and header_bytes < HEADER_BYTES_PER_TURN and len(buf) - end >= _FRAME_HEADER:
            n = _FRAME_HEADER + int.from_bytes(buf[end:end + 3], "big")
            if n - _FRAME_HEADER > self.h2.max_inbound_frame_size:  # h2 would wait for all of it before refusing
                self.give_up(h2.errors.ErrorCodes.FRAME_SIZE_ERROR, "syntax")
                return
            if len(buf) - end < n:
                break
            kind = buf[end + 3]
            if kind in (_HEADERS, _CONTINUATION):  # bounded here: h2 gathers a block before decoding it
                self.header_block = (self.header_block if kind == _CONTINUATION else 0) + n - _FRAME_HEADER
                header_bytes += n - _FRAME_HEADER
                if self.header_block > 2 * MAX_METADATA:
                    self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "header_size")
                    return
            elif kind == _SETTINGS:
                self.settings_frames += 1
                if n - _FRAME_HEADER > SETTINGS_BYTES or self.settings_frames > MAX_SETTINGS_FRAMES:
                    self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "flood")
                    return
            end, frames = end + n, frames + 1
        if end:
            with memoryview(buf) as view, view[:end] as frames_read:
                useful = self.receive(frames_read)  # h2 copies what it is given
            if self.closed:
                return
            self.count_idle(frames - useful)
        if data is None:
            del buf[:end]
        elif end < len(data):
            self.inbox += memoryview(data)[end:]
        more = frames == FRAMES_PER_TURN and len(self.inbox) >= _FRAME_HEADER
        if more and self.transport is not None:
            if not self.backlogged:
                self.transport.pause_reading()
            self.backlogged = True
            self.loop.call_soon(self.feed)
        elif self.backlogged:
            self.backlogged = False
            if self.transport is not None and self.paused_since is None:
                self.transport.resume_reading()

    def receive(self, data: memoryview) -> int:
        """Gives `data`, whole frames, to h2 and acts on its events; returns how many of them did something for a
        call (a DATA frame's bytes, a call opened, counting CALL_FRAMES, a call's end)."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:  # h2 has queued its GOAWAY
            self.give_up(None, "syntax")
            return 0
        useful = 0
        for ev in events:
            if isinstance(ev, h2.events.DataReceived):
                useful += bool(ev.data)
                self.data(ev.stream_id, ev.data, ev.flow_controlled_length)
            elif isinstance(ev, h2.events.RequestReceived):
                useful += CALL_FRAMES
                self.open(ev.stream_id, dict(ev.headers))
            elif isinstance(ev, h2.events.StreamEnded):
                useful += 1
                self.stream_ended(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                useful -= CALL_FRAMES - 1 if self.reset(ev.stream_id) else 0  # a call cancelled before its answer
            elif isinstance(ev, h2.events.WindowUpdated):
                self.wake()
            elif isinstance(ev, h2.events.PingAckReceived) and ev.ping_data == DRAIN_PING:
                self.go_away()  # every call the client sent before it read the first GOAWAY has arrived
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                useful += not self.settled  # the client's first SETTINGS, its part of the handshake
                self.settled = True
                self.wake()  # a new initial window size changes every stream's window
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.flush()
                self.close()
                return useful
        self.flush()
        return useful

    def count_idle(self, n: int) -> None:
        now = self.loop.time()
        if now - self.window_start > FLOOD_WINDOW_S:
            self.idle_frames, self.window_start = 0, now
        self.idle_frames = max(0, self.idle_frames + n)
        if self.idle_frames > FLOOD_FRAMES:
            self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, "flood")

    def give_up(self, code: h2.errors.ErrorCodes | None, reason: str) -> None:
        """Ends the connection for the client's fault: GOAWAY with `code` (None: h2 has queued its own), closed,
        counted by `reason`."""
        self.port.counters.reject("grpc", Refusal("", reason))
        if code is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(code)
        self.flush()
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.port.connections.discard(self)
        for call in list(self.calls.values()):
            if call.task is not None:
                call.task.cancel()
            self.drop(call)
        self.wake()

    def pause_writing(self) -> None:
        """The client reads less than it is sent: read nothing more of it (its PINGs and SETTINGS would each
        queue an answer) until it catches up."""
        self.paused_since = self.loop.time()
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused_since = None
        if self.transport is not None and not self.backlogged:
            self.transport.resume_reading()
        self.wake()

    # ---- calls ----
    def open(self, sid: int, headers: dict[bytes, bytes]) -> None:
        self.active = self.loop.time()
        path = headers.get(b":path", b"")
        service, _, method = path.decode("latin-1").lstrip("/").partition("/")
        deadline = grpc_timeout(headers.get(b"grpc-timeout"))
        call = Call(self, sid, method, self.active)
        self.calls[sid] = call
        if self.last_goaway:
            self.end(call, UNAVAILABLE, "the server is stopping")
        elif headers.get(b":method") != b"POST" or not headers.get(b"content-type", b"").startswith(GRPC_TYPE):
            self.port.refuse(call, UNIMPLEMENTED, "not a gRPC call (POST, content-type application/grpc)", "route")
        elif service != SERVICE or method not in GRPC_METHODS:
            self.port.refuse(call, UNIMPLEMENTED, f"Method not found: {path[:160].decode('latin-1')} is not served",
                             "route")
        elif headers.get(b"grpc-encoding", b"identity") != b"identity":
            self.port.refuse(call, UNIMPLEMENTED, COMPRESSED, "encoding")
        elif isinstance(deadline, Refusal):
            self.port.refuse(call, INVALID_ARGUMENT, deadline, deadline.reason)
        else:
            call.deadline = None if deadline is None else self.active + deadline
            if (displaced := self.port.waiting.arrive(call)) is not None:
                self.port.refuse(displaced, RESOURCE_EXHAUSTED, "the request message had not arrived when a newer "
                                 f"call needed its place (at most {self.port.waiting.limit} calls wait for theirs)",
                                 "stalled")

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
                port.refuse(call, UNIMPLEMENTED, COMPRESSED, "encoding")
                return
            call.size = int.from_bytes(call.prefix[1:], "big")
            if call.size > port.limit:
                port.refuse(call, RESOURCE_EXHAUSTED, f"request message of {call.size} bytes is over the server's "
                            f"limit of {port.limit} bytes", "too_large")
                return
        if call.received > _PREFIX + call.size:
            port.refuse(call, INVALID_ARGUMENT, ONE_MESSAGE, "structure")
            return
        if len(rest) and not self.reserve(call, call.received - _PREFIX):
            port.refuse(call, RESOURCE_EXHAUSTED, OVER_BUDGET, "overloaded")
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
            port.refuse(call, INVALID_ARGUMENT, ONE_MESSAGE, "structure")
        elif port.busy >= port.cfg.max_connections:
            port.refuse(call, RESOURCE_EXHAUSTED, f"the server is answering its limit of {port.cfg.max_connections} "
                        "calls; try again", "overloaded")
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
            self.port.counters.reject("grpc", Refusal("", "read_timeout"))
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.reset_stream(call.sid, h2.errors.ErrorCodes.CANCEL)
            self.flush()
            self.drop(call)
        except Exception as e:  # a fault of the front's own: the call is still answered, never left open
            e.__traceback__ = None
            self.end(call, INTERNAL, f"the front could not pass the call on ({type(e).__name__})")

    async def respond(self, call: Call, payload: bytes) -> None:
        self.release(call)  # the request is answered: its bytes go back to the budget
        self.h2.send_headers(call.sid, [(b":status", b"200"), (b"content-type", GRPC_TYPE)])
        call.answering = True
        head = b"\0" + len(payload).to_bytes(4, "big")
        if len(payload) < MAX_FRAME:  # one frame, and with the headers and trailers one write
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
            n = min(self.h2.local_flow_control_window(sid), self.h2.max_outbound_frame_size, len(view) - at)
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

    # ---- the connection ----
    def flush(self) -> None:
        if (data := self.h2.data_to_send()) and self.transport is not None:
            self.transport.write(data)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

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

    def close(self, linger_s: float = ABORT_AFTER_S) -> None:
        """Reads nothing more; what is queued goes out for at most `linger_s`, then the connection is aborted (a
        transport closes only once its queue is written: a client that reads nothing would keep it open)."""
        self.closed = True
        self.inbox = bytearray()  # a new one: the old may be read from right now
        if self.transport is not None:
            transport = self.transport
            transport.close()
            self.loop.call_later(linger_s, transport.abort)
