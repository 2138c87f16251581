"""The top-level model's feature policy without a server: the memory of videos that failed (same error at once,
forgotten after its time, bounded) and `FeatureScheduler` (one computation per video, hits never wait, bounded cold
work, the client's failures remembered)."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
import torch

from videoitg.admission import OverloadedError
from videoitg.decode import NotAVideoError
from videoitg.errors import VideoDecodeError
from videoitg.python_backend import cache as cache_mod
from videoitg.python_backend.cache import FailureMemory, FeatureCache
from videoitg.python_backend.scheduling import FeatureScheduler, NotCachedError


def test_failure_is_remembered_until_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: now[0])
    m = FailureMemory(ttl_s=60.0)
    err = VideoDecodeError("video is corrupt")
    m.remember("k", err)
    got = m.get("k")
    assert type(got) is VideoDecodeError and str(got) == "video is corrupt" and m.get("other") is None
    now[0] += 59.9
    assert str(m.get("k")) == "video is corrupt"
    now[0] += 0.1
    assert m.get("k") is None and len(m) == 0


def test_failure_memory_keeps_no_request_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the exception nor its traceback is kept (the traceback's frames hold the request's bytes), and
    expired entries go when others are added, not only when their own key is asked again."""
    now = [0.0]
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: now[0])
    m = FailureMemory(ttl_s=60.0)

    class Upload(bytearray):
        pass

    def fail(data: Upload) -> None:
        raise VideoDecodeError(f"{len(data)} bytes are not a video")

    upload = Upload(1 << 20)
    ref = weakref.ref(upload)
    try:
        fail(upload)
    except VideoDecodeError as e:
        m.remember("bad", e)
    del upload
    gc.collect()
    assert ref() is None, "the failure memory keeps the failed request's data alive"
    assert str(m.get("bad")) == "1048576 bytes are not a video"
    for i in range(3):
        m.remember(f"old{i}", VideoDecodeError("x"))
    now[0] += 61
    m.remember("new", VideoDecodeError("y"))
    assert len(m) == 1 and m.get("new") is not None


def test_failure_memory_is_bounded_oldest_first() -> None:
    m = FailureMemory(capacity=3)
    for i in range(5):
        m.remember(str(i), VideoDecodeError(str(i)))
    assert len(m) == 3 and m.get("0") is None and m.get("1") is None
    assert str(m.get("4")) == "4"


# ---- FeatureScheduler: the top-level model's policy, without a server ----------------------------------------
def _scheduler(max_cold: int = 2, cold_wait_s: float = 0.2) -> FeatureScheduler:
    return FeatureScheduler(FeatureCache(1 << 20), FailureMemory(), max_cold, cold_wait_s=cold_wait_s)


def _never_client_fault(e: BaseException) -> bool:
    return False


class Gated:
    """A computation that finishes with `value` once `release()` is called (make it inside the running loop)."""

    def __init__(self, value: torch.Tensor):
        self.value, self.gate = value, asyncio.Event()

    async def __call__(self) -> torch.Tensor:
        await self.gate.wait()
        return self.value

    def release(self) -> None:
        self.gate.set()


def test_scheduler_computes_a_video_once_for_concurrent_requests_and_caches_it() -> None:
    s, calls = _scheduler(), []

    async def compute():
        calls.append(1)
        await asyncio.sleep(0.05)
        return torch.ones(2, 3)

    async def run():
        got = await asyncio.gather(*(s.features("k", compute, _never_client_fault) for _ in range(5)))
        again = await s.features("k", compute, _never_client_fault)
        return got, again

    got, again = asyncio.run(run())
    assert len(calls) == 1 and [hit for _, hit in got] == [False] * 5 and again[1] is True
    assert (s.hits, s.misses, s.cold.in_flight, len(s.pending)) == (1, 5, 0, 0)


def test_scheduler_answers_a_hit_while_another_video_computes_and_bounds_cold_work() -> None:
    s = _scheduler(max_cold=1)

    async def run():
        slow = Gated(torch.zeros(1))
        s.cache.put("cached", torch.ones(1))
        cold = asyncio.create_task(s.features("a", slow, _never_client_fault))
        await asyncio.sleep(0)  # "a" is now computing and holds the one cold slot
        hit = await asyncio.wait_for(s.features("cached", slow, _never_client_fault), timeout=1)
        t = asyncio.get_running_loop().time()
        with pytest.raises(OverloadedError):
            await s.features("b", slow, _never_client_fault)  # a second cold video: refused once its wait ends
        waited = asyncio.get_running_loop().time() - t
        slow.release()
        return hit, await cold, waited

    hit, cold, waited = asyncio.run(run())
    assert hit[1] is True and cold[1] is False and s.cold.in_flight == 0 and not s.pending
    assert 0.2 <= waited < 2.0  # the scheduler's cold_wait_s, not the caller's own timeout
    assert s.cold.refused == 1


def test_scheduler_starts_a_waiting_video_when_a_slot_frees_in_arrival_order() -> None:
    """Past max_cold a new video waits for a slot (a burst, a repair's backlog) and starts as the one ahead of it
    ends, first come first served; none is refused while slots free within the wait."""
    s, started = _scheduler(max_cold=1, cold_wait_s=30.0), []

    def video(name: str, gate: asyncio.Event):
        async def compute():
            started.append(name)
            await gate.wait()
            return torch.full((1,), float(len(name)))
        return compute

    async def run():
        gates = {n: asyncio.Event() for n in ("a", "bb", "ccc")}
        tasks = {}
        for n in gates:
            tasks[n] = asyncio.create_task(s.features(n, video(n, gates[n]), _never_client_fault))
            await asyncio.sleep(0.01)
        assert started == ["a"] and s.cold.in_flight == 1  # the others wait for the one slot, not refused
        gates["a"].set()
        await tasks["a"]
        await asyncio.sleep(0.01)
        assert started == ["a", "bb"]
        gates["bb"].set()
        gates["ccc"].set()
        return [await tasks[n] for n in gates]

    got = asyncio.run(run())
    assert started == ["a", "bb", "ccc"] and [float(f[0]) for f, _ in got] == [1.0, 2.0, 3.0]
    assert s.cold.refused == 0 and s.cold.in_flight == 0 and not s.pending


def test_scheduler_remembers_the_clients_failures_only() -> None:
    s, calls = _scheduler(), []

    async def bad():
        calls.append(1)
        raise NotAVideoError("not a video")

    async def broken():
        calls.append(1)
        raise RuntimeError("step crashed")

    def client_fault(e: BaseException) -> bool:
        return isinstance(e, NotAVideoError)

    async def run():
        for _ in range(3):
            with pytest.raises(NotAVideoError):
                await s.features("bad", bad, client_fault)
        for _ in range(2):
            with pytest.raises(RuntimeError):
                await s.features("broken", broken, client_fault)

    asyncio.run(run())
    assert len(calls) == 1 + 2  # the client's bad video once; the server's own failure is tried again
    assert s.cold.in_flight == 0 and not s.pending


def test_scheduler_answers_a_digest_alone_from_the_cache_or_a_computation_under_way() -> None:
    s = _scheduler()

    async def run():
        slow = Gated(torch.ones(1))
        with pytest.raises(NotCachedError, match="send VIDEO"):
            await s.features("k", None, _never_client_fault)  # nothing cached, nothing computing
        cold = asyncio.create_task(s.features("k", slow, _never_client_fault))
        await asyncio.sleep(0)
        joined = asyncio.create_task(s.features("k", None, _never_client_fault))  # joins the computation
        await asyncio.sleep(0)
        slow.release()
        return await cold, await joined, await s.features("k", None, _never_client_fault)

    cold, joined, hit = asyncio.run(run())
    assert (cold[1], joined[1], hit[1]) == (False, False, True) and torch.equal(joined[0], hit[0])
