"""Admission control: a non-blocking gate of N slots; past it a request is refused at once with OverloadedError
(queueing would only hold memory for requests whose clients may already have timed out)."""

from __future__ import annotations

import threading

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
            with self._lock:
                self.refused += 1
            raise OverloadedError(f"server busy: {self.capacity} requests already in flight "
                                  f"(max_in_flight={self.capacity}); retry later")
        with self._lock:
            self.in_flight += 1

    def release(self) -> None:
        self._sem.release()  # ValueError when no slot is taken
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> InFlightGate:
        self.admit()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
