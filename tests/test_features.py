"""`videoitg.python_backend.features`: how the top-level model calls its steps. Without a server: the Triton
module is a bare stand-in (only `Tensor`, which the DALI path builds its request from), and the step call itself is
replaced by one that records what reached it."""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.video import random_clip
from videoitg.limits import Limits
from videoitg.sampling import SamplingParams


class Reached(Exception):
    pass


def test_a_cache_hit_answers_while_a_slow_dali_plan_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The DALI path plans the decode in the container first (up to the decode budget): off the event loop, so
    the requests in flight, cache hits included, do not stall behind it."""
    pb = types.ModuleType("triton_python_backend_utils")
    pb.Tensor = lambda name, data: (name, data)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    features = importlib.import_module("videoitg.python_backend.features")
    from videoitg.python_backend.cache import FailureMemory, FeatureCache
    from videoitg.python_backend.scheduling import FeatureScheduler

    import videoitg.decode as decode

    plan = decode.plan_decode
    monkeypatch.setattr(decode, "plan_decode", lambda *a, **k: (time.sleep(1.5), plan(*a, **k))[1])
    video = random_clip(tmp_path / "v.mp4", seed=1)
    steps = features.Steps("videoitg_decode", "videoitg_vision", "videoitg_grounding", "dali", False,
                           SamplingParams(8, 2.0), Limits(), ThreadPoolExecutor(2))
    reached: list[list[str]] = []

    async def call(model: str, inputs: list, outputs: list[str]):
        reached.append([name for name, _ in inputs])
        raise Reached(model)

    steps.call = call
    scheduler = FeatureScheduler(FeatureCache(1 << 20), FailureMemory(), max_cold=2)
    scheduler.cache.put("cached", "features of a cached video")

    async def run() -> float:
        cold = asyncio.create_task(scheduler.features("cold", lambda: steps.visual(video), lambda e: False))
        await asyncio.sleep(0.1)  # the plan is running
        t0 = time.monotonic()
        got, hit = await scheduler.features("cached", None, lambda e: False)
        took = time.monotonic() - t0
        assert (got, hit) == ("features of a cached video", True) and not cold.done()
        with pytest.raises(Reached, match="videoitg_decode"):
            await cold
        return took

    took = asyncio.run(run())
    assert took < 0.5, f"the cache hit waited {took:.2f} s behind the plan"
    assert reached == [["VIDEO", "FRAMES", "COLOUR"]]  # the planned frames went on to the DALI decode step
