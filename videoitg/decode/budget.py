"""Per-decode time and work budget: the decode runs in a worker thread the caller waits on at most `budget_s`
(FFmpeg reads can block where no Python check runs), and the decoder is charged the pixels of every frame it decodes."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from videoitg.decode import threads as kept
from videoitg.decode.errors import DecodeTimeoutError, VideoTooLargeError

T = TypeVar("T")


class Deadline:
    """Shared between the caller and the worker: the worker calls `check()` at safe points."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.t_end = math.inf if budget_s is None else time.monotonic() + budget_s
        self.stage = "starting"
        self._cancelled = threading.Event()
        self.max_pixels = math.inf  # decode work allowed (set once the frames to decode are known)
        self.pixels = 0  # decoded so far

    def spend(self, pixels: int) -> None:
        self.pixels += pixels
        if self.pixels > self.max_pixels:
            self._cancelled.set()
            raise VideoTooLargeError(f"decoding stopped after {self.pixels / 1e9:.1f} Gpx, over the decode work "
                                     f"limit of {self.max_pixels / 1e9:.1f} Gpx for this video "
                                     "(max_decode_pixels_per_byte)")

    def cancel(self) -> None:
        self._cancelled.set()

    def check(self, stage: str | None = None) -> None:
        if stage is not None:
            self.stage = stage
        if self._cancelled.is_set() or time.monotonic() > self.t_end:
            self._cancelled.set()
            raise DecodeTimeoutError(f"video decode exceeded its time budget of {self.budget_s:g} s "
                                     f"(while {self.stage})")


def run_with_budget(fn: Callable[[Deadline], T], budget_s: float | None) -> T:
    """Run `fn(deadline)`: its result, its error, or `DecodeTimeoutError` once the budget is spent."""
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"time_budget_s must be > 0 or None, got {budget_s}")
    deadline = Deadline(budget_s)
    if budget_s is None:
        return fn(deadline)
    box: dict[str, object] = {}

    def work() -> None:
        try:
            box["result"] = fn(deadline)
        except BaseException as e:  # handed to the caller's thread below
            box["error"] = e

    if not kept.start(work, "videoitg-decode").wait(budget_s):
        # The worker may be blocked inside FFmpeg; it stops at its next check (or when the read returns).
        deadline.cancel()
        raise DecodeTimeoutError(f"video decode exceeded its time budget of {budget_s:g} s "
                                 f"(stalled while {deadline.stage})")
    if "error" in box:
        raise box["error"]
    return box["result"]
