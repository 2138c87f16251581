"""How the top-level model gets one video's features: who computes, shares, waits or is refused. No Triton here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from videoitg.admission import OverloadedError, WaitingGate
from videoitg.errors import VideoITGError

from .cache import FailureMemory, FeatureCache

# How long a new video waits for one of the `max_cold` slots before it is refused: a burst's extra videos (a repair's
# backlog, a client's batch) start as the decodes ahead of them end instead of being refused while a slot is about
# to free; sustained overload is still refused. Bounded in memory by the top-level model's own gate.
COLD_WAIT_S = 5.0


class NotCachedError(VideoITGError):
    """A video named by its digest alone is not in this server's cache (nor being computed): send its bytes."""


class FeatureScheduler:
    """`features, hit = await scheduler.features(key, compute, remember)`:
    - a cache hit is answered at once (it never waits behind another request's decode);
    - a video that failed for its own sake (`remember(error)`: a verdict about the video, never about the server's
      load) is refused again with the same error for a while, not decoded again on every retry;
    - concurrent requests on one video share one computation;
    - at most `max_cold` videos are computed at once; past it a new video waits up to `cold_wait_s` for a slot,
      first come first served, then gets OverloadedError (UNAVAILABLE) instead of queueing while its client times
      out;
    - a request that names its video by digest alone (`compute` None) is a hit, joins the computation under way, or
      gets NotCachedError (the client then sends the bytes)."""

    def __init__(self, cache: FeatureCache, failures: FailureMemory, max_cold: int,
                 on_change: Callable[[bool | None], None] | None = None, cold_wait_s: float = COLD_WAIT_S) -> None:
        self.cache, self.failures = cache, failures
        self.cold = WaitingGate(max_cold)  # videos being computed
        self.cold_wait_s = cold_wait_s
        self.pending: dict[str, asyncio.Task] = {}  # cache key -> its computation, shared by its requests
        self.hits = self.misses = 0
        # Metrics: called with True for a hit, False for a miss, None when the cold count or the cache size moves.
        self._on_change = on_change or (lambda hit: None)

    async def features(self, key: str, compute: Callable[[], Awaitable[Any]] | None,
                       remember: Callable[[BaseException], bool]) -> tuple[Any, bool]:
        """(features, came from the cache). Raises the remembered or the computation's error, OverloadedError
        when a new video would exceed `max_cold`, or NotCachedError when there is nothing to compute from."""
        f = self.cache.get(key)
        if f is not None:
            self.hits += 1
            self._on_change(True)
            return f, True
        failed, task = self.failures.get(key), self.pending.get(key)
        if failed is None and task is None and compute is None:  # not a miss: the bytes will follow
            raise NotCachedError("VIDEO_DIGEST names a video this server has not cached: send VIDEO")
        self.misses += 1
        self._on_change(False)
        if failed is not None:
            raise failed
        if task is None:  # the first request on this video computes it; the others await the same task
            assert compute is not None
            task = self.pending[key] = asyncio.get_running_loop().create_task(
                self._compute(key, compute, remember))
        return await asyncio.shield(task), False  # a cancelled waiter does not cancel the others' computation

    async def _compute(self, key: str, compute: Callable[[], Awaitable[Any]],
                       remember: Callable[[BaseException], bool]) -> Any:
        try:  # one of the `max_cold` slots: at once, or the first freed within `cold_wait_s`
            await self.cold.enter(self.cold_wait_s)
        except OverloadedError:
            del self.pending[key]
            raise
        self._on_change(None)
        try:
            f = await compute()
        except Exception as e:
            if remember(e):
                self.failures.remember(key, e)
            raise
        finally:
            del self.pending[key]
            await self.cold.leave()
            self._on_change(None)
        self.cache.put(key, f)
        self._on_change(None)
        return f
