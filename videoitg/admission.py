"""Admission control: a non-blocking gate of N slots; past it a request is refused at once with OverloadedError
(queueing would only hold memory for requests whose clients may already have timed out). In an asyncio server a
request may instead wait a bounded time for a slot, in a bounded line (`WaitingGate`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from videoitg.errors import VideoITGError


class OverloadedError(VideoITGError):
    """More requests in flight than a gate admits (`Limits.max_in_flight`): not the client's input, retry later."""


class InFlightGate:
    """`admit()` takes a slot or raises OverloadedError at once; `release()` gives it back. `with gate:` does both
    around a block."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._sem = threading.BoundedSemaphore(capacity)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.refused = 0

    def try_admit(self) -> bool:
        """A slot if one is free now (True), else False, not counted as refused."""
        if not self._sem.acquire(blocking=False):
            return False
        with self._lock:
            self.in_flight += 1
        return True

    def admit(self) -> None:
        if not self._sem.acquire(blocking=False):
            raise self._refusal(f"{self.capacity} requests already in flight")
        with self._lock:
            self.in_flight += 1

    def _refusal(self, why: str) -> OverloadedError:
        """The error for a request refused now, counted."""
        with self._lock:
            self.refused += 1
        return OverloadedError(f"server busy: {why} (max_in_flight={self.capacity}); retry later")

    def release(self) -> None:
        self._sem.release()  # ValueError when no slot is taken
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> InFlightGate:
        self.admit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class WaitingGate(InFlightGate):
    """An `InFlightGate` of one asyncio loop whose requests may wait for a slot: `await gate.enter(wait_s, nbytes)`
    takes a free slot, or the first one freed within `wait_s` (waiters in turn), else OverloadedError; at once where
    `max_waiting` requests, or `max_waiting_bytes` of their inputs, wait already (None: no bound). `await
    gate.leave()` frees the slot and wakes a waiter; `on_wait(n)` is told how many wait whenever that changes. A
    short outage of what the requests need (a repair) then ends with its requests answered late: refused, they
    would come back as retries beside the new arrivals and keep a server at its edge refusing."""

    def __init__(self, capacity: int, max_waiting: int | None = None, max_waiting_bytes: int | None = None,
                 on_wait: Callable[[int], None] | None = None) -> None:
        super().__init__(capacity)
        self.max_waiting, self.max_waiting_bytes = max_waiting, max_waiting_bytes
        self._on_wait = on_wait or (lambda n: None)
        self.waiting = self.waiting_bytes = 0
        self._freed: asyncio.Condition | None = None  # made in the loop, at the first wait

    async def enter(self, wait_s: float, nbytes: int = 0) -> None:
        if self.try_admit():
            return
        if (self.max_waiting is not None and self.waiting >= self.max_waiting) or (
                self.max_waiting_bytes is not None and self.waiting_bytes + nbytes > self.max_waiting_bytes):
            raise self._refusal(f"{self.capacity} requests in flight and {self.waiting} waiting")
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        self._freed = self._freed or asyncio.Condition()
        self.waiting += 1
        self.waiting_bytes += nbytes
        self._on_wait(self.waiting)
        try:
            async with self._freed:
                while not self.try_admit():
                    if loop.time() >= end:
                        self.admit()  # OverloadedError, counted as refused (a slot free just now is taken)
                        return
                    try:
                        await asyncio.wait_for(self._freed.wait(), end - loop.time())
                    except TimeoutError:
                        pass
        finally:
            self.waiting -= 1
            self.waiting_bytes -= nbytes
            self._on_wait(self.waiting)

    async def leave(self) -> None:
        self.release()
        if self._freed is not None and self.waiting:  # no lock taken while nobody waits
            async with self._freed:
                self._freed.notify()
