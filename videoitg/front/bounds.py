"""The byte and time bounds of what clients send, shared by the HTTP and gRPC ports: the held-bytes budget
(`ByteBudget`: request bytes held at once, all connections together), a body's pace (`body_time_left`), a request
body read under those bounds (`BodyReader`, `stream_body`) and the gRPC calls waiting for their message
(`WaitingCalls`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from videoitg.front.policy import Reason, Refusal

BODY_IDLE_S = 10.0  # the longest wait for the next byte of a body
BODY_GRACE_S = 10.0  # a body must keep pace: n bytes in at most BODY_GRACE_S + n / MIN_BODY_RATE of waiting for them
MIN_BODY_RATE = 1 << 20  # bytes per second
FORWARD_BYTES = 64 << 10  # the smallest write of a body passed on while it arrives (but its last)
OVER_BUDGET = "the server holds too many request bodies now: retry shortly"  # a refusal of the held-bytes budget
ABANDONED = "the client closed the connection before the body was sent"
STOPPING = "the server is stopping: send the request again"  # a body or message still arriving at a stop


class Stopping(Exception):
    """The server is stopping: set on a body's stream (`BodyReader.stop`), which ends its reading."""


class UnreadableBody(Exception):
    """aiohttp's HTTP parser refused the bytes that follow a body being read (a malformed chunk): set on the body's
    stream (`connections.Handler`), which ends its reading as malformed; the message is the parser's complaint."""


class ByteBudget:
    """Request bytes held at once, all connections together, and the copies the answer endpoint makes of them: a
    chunk is taken before it is kept. Safe to use from the worker threads that parse and decode."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0
        # the most held since its owner last lowered it (`process.trim_after_release` trims the heap after a fall)
        self.high = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.held + n > self.limit:
                return False
            self.held += n
            self.high = max(self.high, self.held)
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


def body_time_left(waited_s: float, received: int) -> float:
    """How much longer a request body (or gRPC message) may wait for its client's bytes, having waited `waited_s`
    for the `received` so far: it must keep pace with MIN_BODY_RATE after a grace of BODY_GRACE_S, the allowance
    growing with each byte that arrives. A trickle is refused within about BODY_GRACE_S, whatever length it
    declared; a client at MIN_BODY_RATE or faster never is."""
    return BODY_GRACE_S + received / MIN_BODY_RATE - waited_s


def body_timeout(what: str, stalled_s: float | None = None) -> Refusal:
    """The refusal of a body or message (`what`) that had no byte for `stalled_s`, or (None) fell behind its pace."""
    why = (f"stalled (no byte for {stalled_s:.0f} s)" if stalled_s is not None
           else f"slower than {MIN_BODY_RATE >> 20} MiB/s")
    return Refusal(f"{what} {why}", Reason.BODY_TIMEOUT)


class WaitingCalls:
    """gRPC calls whose request message has not all arrived, at most `limit`, the one longest without a byte
    first: a call past the limit displaces it. Under a flood of streams that send their headers and then wait, that
    is one of those, never a message still arriving."""

    def __init__(self, limit: int):
        self.limit = limit
        self.calls: dict[Any, None] = {}  # insertion-ordered: the oldest first

    def arrive(self, call: Any) -> Any | None:
        """Registers `call`; returns the call it displaces, if any (to be ended by its owner)."""
        oldest = None
        if len(self.calls) >= self.limit:
            oldest = next(iter(self.calls))
            del self.calls[oldest]
        self.calls[call] = None
        return oldest

    def progress(self, call: Any) -> None:
        """Bytes of `call`'s message arrived: it goes last."""
        if call in self.calls:
            self.calls.pop(call)
            self.calls[call] = None

    def leave(self, call: Any) -> None:
        """`call` no longer waits: its message came, or it ended."""
        self.calls.pop(call, None)


class BodyReader:
    """A request body read chunk by chunk from an aiohttp StreamReader (`readany`) under the front's bounds: at most
    `limit` bytes; each chunk taken from `budget` before it is kept (given back by `release`, once the request is
    answered); a byte at least every `idle_s`, and the body's pace kept (`body_time_left`), counting only the time
    spent waiting for the client: while the front does not read (tritonserver taking the body slower than it
    arrives), the client is not blamed. `refusal` says why reading stopped early: over `limit` (413), over the
    budget (503), too slow (408), the client gone ('abandoned'), a malformed chunked encoding, the server stopping
    (503, `stop`)."""

    def __init__(self, stream: Any, limit: int, budget: ByteBudget, idle_s: float = BODY_IDLE_S):
        self.stream, self.limit, self.budget, self.idle_s = stream, limit, budget, idle_s
        self.loop = asyncio.get_running_loop()
        self.waited = 0.0  # seconds spent waiting for the client's bytes
        self.received = 0
        self.taken = 0
        self.refusal: Refusal | None = None

    async def chunk(self) -> bytes | None:
        """The next chunk, b"" at the end of the body, or None once refused (`refusal` says why)."""
        if self.refusal is not None:
            return None
        left = body_time_left(self.waited, self.received)
        if left <= 0:
            self.refusal = body_timeout("request body")
            return None
        wait = min(self.idle_s, left)
        try:  # a body all in hand is taken without a wait (wait_for costs a task and a timer)
            if self.stream.is_eof():
                chunk = self.stream.read_nowait()
            else:
                t0 = self.loop.time()
                try:
                    chunk = await asyncio.wait_for(self.stream.readany(), wait)
                finally:
                    self.waited += self.loop.time() - t0
        except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
            self.refusal = body_timeout("request body", wait if wait == self.idle_s else None)
        except Stopping:
            self.refusal = Refusal(STOPPING, Reason.STOPPING)
        except ConnectionError as e:
            e.__traceback__ = None  # the request's stream keeps this exception: its traceback would hold the body
            self.refusal = Refusal(ABANDONED, Reason.ABANDONED)
        except Exception as e:  # aiohttp's payload errors: a malformed chunked encoding
            e.__traceback__ = None
            detail = str(e) if isinstance(e, UnreadableBody) else type(e).__name__
            self.refusal = Refusal(f"request body is malformed ({detail})", Reason.FRAMING)
        else:
            if self.received + len(chunk) > self.limit:
                self.refusal = Refusal(f"request body is over the server's limit of {self.limit} bytes",
                                       Reason.TOO_LARGE)
            elif not self.budget.take(len(chunk)):
                self.refusal = Refusal(OVER_BUDGET, Reason.OVERLOADED)
            else:
                self.received += len(chunk)
                self.taken += len(chunk)
                return chunk
        return None

    def release(self) -> None:
        self.budget.give(self.taken)
        self.taken = 0

    def stop(self) -> None:
        """The server is stopping: a body still arriving is refused at once (its next read, or the one waiting,
        ends with `Stopping`); a body all in hand is not."""
        if self.refusal is None and not self.stream.is_eof():
            self.stream.set_exception(Stopping())


async def stream_body(pending: list[bytes], reader: BodyReader) -> AsyncIterator[bytes]:
    """The chunks in hand, then the rest of the body as it arrives, in pieces of at least FORWARD_BYTES (the last
    may be shorter): a client's small writes reach tritonserver coalesced. A refusal while reading ends the stream
    with `BodyRefused` (`reader.refusal` says why)."""
    size = sum(map(len, pending))
    while chunk := await reader.chunk():
        if size + len(chunk) < FORWARD_BYTES:
            pending.append(chunk)
            size += len(chunk)
            continue
        yield b"".join((*pending, chunk)) if pending else chunk
        pending, size = [], 0
    if reader.refusal is not None:
        pending.clear()
        raise BodyRefused(reader.refusal)
    if pending:
        yield b"".join(pending)


class BodyRefused(Exception):
    """A body refused while it was passed on (`BodyReader.refusal`)."""
