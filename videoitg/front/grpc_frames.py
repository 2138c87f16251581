"""One client connection of the gRPC port as HTTP/2 frames (the `h2` protocol library), bounded before h2 parses
them: a frame's size from its header, a header block's size, frames per turn of the event loop, frames that carry
nothing for a call (a flood: PINGs, SETTINGS, resets, window updates), a client that reads nothing of what it is
sent. `FrameConnection` hands the calls' events (`open`, `data`, `stream_ended`, `reset`, `ping_acked`) to its
subclass, `grpc_calls.Connection`."""

from __future__ import annotations

import asyncio
import contextlib

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame

from videoitg.front.config import FrontCounters
from videoitg.front.policy import Reason, Refusal

STREAMS_PER_CONNECTION = 128  # SETTINGS_MAX_CONCURRENT_STREAMS
# How many of a connection's closed streams h2 remembers the end of (h2's own bound: 65,536, about 8 MiB on a
# connection that made that many calls, so the front grew with every long-lived client): enough to answer a frame
# still on its way for a stream just reset (with RST_STREAM, not by ending the connection), 8 times as many calls
# as may be open at once.
CLOSED_STREAMS = 8 * STREAMS_PER_CONNECTION
STREAM_WINDOW = 1 << 20  # the initial window of a stream: what a client may send ahead of the front's reading
CONNECTION_WINDOW = 4 << 20
MAX_FRAME = 64 << 10  # SETTINGS_MAX_FRAME_SIZE: fewer, larger DATA frames than HTTP/2's default 16 KiB
# The largest DATA frame sent: HTTP/2's initial SETTINGS_MAX_FRAME_SIZE, which every peer takes from the start. A
# larger size a client advertised may not be in force at its end yet (grpc-core checks a frame against the
# settings it has seen acknowledged, and refuses a larger one: "Frame size ... is larger than max frame size").
OUT_FRAME = 16 << 10
MAX_METADATA = 8 << 10  # SETTINGS_MAX_HEADER_LIST_SIZE, and what the decoder takes (grpcio's own default)
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
_DATA, _HEADERS, _SETTINGS, _CONTINUATION = 0x0, 0x1, 0x4, 0x9  # frame types
_PREFACE = len(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
_FRAME_HEADER = 9


def cheap_data_frame_repr() -> None:
    """A DATA frame's repr names its payload's length. h2 builds repr(frame) of every frame it receives, for a trace
    log call made whatever the logger (`H2Connection._receive_frame`), and hyperframe's repr of a DATA frame
    serializes and hexlifies all of its payload before cutting it to 20 characters: as much CPU as the rest of h2's
    reading of a message. Checked against h2 4.4.1 and hyperframe 6.1.0; called where the gRPC port starts (the
    only reader of DATA frames in the front's process)."""
    DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign]


def _data_body_repr(self: DataFrame) -> str:
    return f"data=<{len(self.data)} bytes>"


class H2Connection(h2.connection.H2Connection):
    """h2's connection, remembering the ends of its last CLOSED_STREAMS closed streams."""

    MAX_CLOSED_STREAMS = CLOSED_STREAMS


class FrameConnection(asyncio.Protocol):
    """One client connection: HTTP/2 frames in, each bounded before h2 reads it; the calls' events go to the
    subclass."""

    def __init__(self, counters: FrontCounters):
        self.counters = counters
        # The front's own headers go out unchecked (they are constants and numbers); a client's are checked.
        self.h2 = H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False))
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.opened = self.loop.time()
        self.settled = False  # the client's preface and SETTINGS arrived
        self.paused_since: float | None = None  # the client reads nothing of what it is sent
        self.waiters: list[asyncio.Future] = []  # writers waiting for flow-control window or a drained transport
        self.inbox = bytearray()  # bytes read, not yet given to h2
        self.fed_preface = False
        self.backlogged = False  # whole frames wait in the inbox for the next turn
        self.header_block = 0  # bytes of the header block being received (HEADERS, then CONTINUATION frames)
        self.settings_frames = 0
        self.closed = False
        self.idle_frames, self.window_start = 0, self.opened  # frames carrying nothing, in the current window

    # ---- the calls' events, acted on by the subclass ----
    def open(self, sid: int, headers: dict[bytes, bytes]) -> None:
        raise NotImplementedError

    def data(self, sid: int, data: bytes, flow_controlled: int) -> None:
        raise NotImplementedError

    def stream_ended(self, sid: int) -> None:
        raise NotImplementedError

    def reset(self, sid: int) -> bool:
        """The client cancelled a call; True if it had not been answered."""
        raise NotImplementedError

    def ping_acked(self, data: bytes) -> None:
        raise NotImplementedError

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
                self.give_up(h2.errors.ErrorCodes.FRAME_SIZE_ERROR, Reason.SYNTAX)
                return
            if len(buf) - end < n:
                break
            kind = buf[end + 3]
            if kind in (_HEADERS, _CONTINUATION):  # bounded here: h2 gathers a block before decoding it
                self.header_block = (self.header_block if kind == _CONTINUATION else 0) + n - _FRAME_HEADER
                header_bytes += n - _FRAME_HEADER
                if self.header_block > 2 * MAX_METADATA:
                    self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, Reason.HEADER_SIZE)
                    return
            elif kind == _SETTINGS:
                self.settings_frames += 1
                if n - _FRAME_HEADER > SETTINGS_BYTES or self.settings_frames > MAX_SETTINGS_FRAMES:
                    self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, Reason.FLOOD)
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
            self.give_up(None, Reason.SYNTAX)
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
            elif isinstance(ev, h2.events.PingAckReceived):
                self.ping_acked(ev.ping_data)
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
            self.give_up(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, Reason.FLOOD)

    def give_up(self, code: h2.errors.ErrorCodes | None, reason: Reason) -> None:
        """Ends the connection for the client's fault: GOAWAY with `code` (None: h2 has queued its own), closed,
        counted by `reason`."""
        self.counters.reject("grpc", Refusal("", reason))
        if code is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection(code)
        self.flush()
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
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

    # ---- the connection ----
    def flush(self) -> None:
        if (data := self.h2.data_to_send()) and self.transport is not None:
            self.transport.write(data)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)

    def close(self, linger_s: float = ABORT_AFTER_S) -> None:
        """Reads nothing more; what is queued goes out for at most `linger_s`, then the connection is aborted (a
        transport closes only once its queue is written: a client that reads nothing would keep it open)."""
        self.closed = True
        self.inbox = bytearray()  # a new one: the old may be read from right now
        if self.transport is not None:
            transport = self.transport
            transport.close()
            self.loop.call_later(linger_s, transport.abort)
