"""The byte and time bounds of what clients send (bounds.py): the held-bytes budget, a body read chunk by chunk
under it and at a pace, passed on coalesced, and the gRPC calls waiting for their message."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from typing import Any

import pytest

pytest.importorskip("aiohttp", reason="the serve extra (aiohttp) is not installed")

from tests.support.front import Upload, read_all, without_gc
from videoitg.front import bounds
from videoitg.front.policy import Reason, Refusal


def test_a_call_past_the_waiting_bound_displaces_the_one_longest_without_a_byte() -> None:
    waiting = bounds.WaitingCalls(2)
    assert waiting.arrive("a") is None and waiting.arrive("b") is None
    waiting.leave("a")  # its message came: no longer waiting
    assert waiting.arrive("c") is None
    assert waiting.arrive("d") == "b"  # "b" waited longest
    waiting.progress("c")  # bytes of its message arrived: "d" has gone longer without one
    waiting.progress("b")  # a displaced call: not waiting any more
    assert waiting.arrive("e") == "d"
    waiting.leave("b")  # a displaced call ending: nothing to undo
    assert list(waiting.calls) == ["c", "e"]


def test_an_abandoned_upload_is_released_at_once() -> None:
    """64 MiB sent, then the connection closed: the reader keeps nothing, not even the exception the request's
    stream keeps (its traceback held the buffer until a garbage collection), and gives its bytes back."""
    budget = bounds.ByteBudget(1 << 30)
    lost = ConnectionResetError("Connection lost")  # the stream keeps and re-raises this very object

    async def run() -> tuple[bounds.BodyReader, int]:
        reader = bounds.BodyReader(Upload(64, 1 << 20, lost), 256 << 20, budget)
        await read_all(reader)
        held = tracemalloc.get_traced_memory()[0]
        reader.release()
        return reader, held

    reader, held = without_gc(run())
    assert reader.refusal is not None and reader.refusal.reason is Reason.ABANDONED
    assert lost.__traceback__ is None
    assert held < 8 << 20, f"{held >> 20} MiB still held"
    assert budget.held == 0


def test_a_bodys_bytes_are_taken_from_the_budget_until_released() -> None:
    async def run(chunks: int, budget: bounds.ByteBudget) -> bounds.BodyReader:
        reader = bounds.BodyReader(Upload(chunks, 1 << 20, None), 8 << 20, budget)
        await read_all(reader)
        return reader

    budget = bounds.ByteBudget(10 << 20)
    whole = asyncio.run(run(4, budget))
    assert whole.refusal is None and whole.received == 4 << 20 and budget.held == 4 << 20
    whole.release()
    over = asyncio.run(run(9, budget))
    assert over.refusal is not None and over.refusal.reason is Reason.TOO_LARGE and budget.held == 8 << 20
    over.release()
    small = bounds.ByteBudget(2 << 20)
    busy = asyncio.run(run(4, small))
    assert busy.refusal is not None and busy.refusal.reason is Reason.OVERLOADED
    busy.release()
    assert budget.held == 0 and small.held == 0


class Trickle:
    """An aiohttp StreamReader fed `size` bytes every `every_s` seconds, for as long as it is read."""

    def __init__(self, size: int, every_s: float):
        self.size, self.every_s = size, every_s

    def is_eof(self) -> bool:
        return False

    async def readany(self) -> bytes:
        await asyncio.sleep(self.every_s)
        return b"\0" * self.size


def test_a_body_must_keep_pace_counting_only_the_time_spent_waiting_for_its_client(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.1 s (a trickle, however long the body it declared) is refused once its wait passes the grace
    plus what its bytes earned; 64 KiB every 0.1 s (0.6 MiB/s against a 1 MiB/s floor) too, later. The front's own
    pauses between reads (tritonserver taking the body slowly) are not the client's: 1.6 s of them, more than the
    0.5 s grace and the 0.5 s 512 KiB earn, and the body is taken."""
    monkeypatch.setattr(bounds, "BODY_GRACE_S", 0.5)

    async def run(stream: Any, pause_s: float = 0.0) -> tuple[Refusal | None, int, float]:
        reader = bounds.BodyReader(stream, 1 << 30, bounds.ByteBudget(1 << 30), idle_s=5.0)
        t0 = time.monotonic()
        while await reader.chunk():
            await asyncio.sleep(pause_s)
            if reader.received >= 4 << 20:
                break
        reader.release()
        return reader.refusal, reader.received, time.monotonic() - t0

    refusal, received, took = asyncio.run(run(Trickle(1, 0.1)))
    assert refusal is not None and "slower than 1 MiB/s" in refusal and refusal.reason is Reason.BODY_TIMEOUT
    assert 0.4 < took < 1.5 and received < 10, (took, received)
    refusal, received, took = asyncio.run(run(Trickle(64 << 10, 0.1)))
    assert refusal is not None and "slower than" in refusal and 0.5 < took < 5, (refusal, took)
    refusal, received, took = asyncio.run(run(Upload(8, 64 << 10, None), pause_s=0.2))  # 512 KiB earn 0.5 s
    assert refusal is None and received == 512 << 10 and took > 1.5, (refusal, received, took)


def test_a_body_passed_on_while_it_arrives_goes_in_coalesced_pieces_and_stops_on_a_refusal() -> None:
    """A client's many small writes reach tritonserver as few large ones (Triton 2.51 is hurt by bodies in many
    small pieces), byte for byte; a client that goes away in the middle ends the stream with its refusal."""

    async def run(end: BaseException | None) -> tuple[list[int], Refusal | None, int]:
        budget = bounds.ByteBudget(1 << 30)
        reader = bounds.BodyReader(Upload(300, 1000, end), 1 << 20, budget)
        sizes: list[int] = []
        try:
            async for piece in bounds.stream_body([b"0123456789"], reader):
                sizes.append(len(piece))
        except bounds.BodyRefused:
            pass
        held = budget.held
        reader.release()
        return sizes, reader.refusal, held - budget.held

    sizes, refusal, taken = asyncio.run(run(None))
    assert refusal is None and sum(sizes) == 300_010 and taken == 300_000
    assert all(s >= bounds.FORWARD_BYTES for s in sizes[:-1]) and len(sizes) == 300_010 // bounds.FORWARD_BYTES + 1
    sizes, refusal, _ = asyncio.run(run(ConnectionResetError("Connection lost")))
    assert refusal is not None and refusal.reason is Reason.ABANDONED and sum(sizes) < 300_010
