"""`videoitg.python_backend.steps` with the dali decoder: the top-level model sends the video to the decode step
(which runs DALI itself) and awaits its one answer, so a cache hit answers while a cold video decodes. Without a
server: the Triton module is a bare stand-in (only `Tensor`), and the step call is replaced by one that records
what reached it."""

from __future__ import annotations

import asyncio
import importlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from benchmarks.clips import random_clip
from tests.support.triton_stub import stand_in_pb_utils
from videoitg.python_backend.cache import FailureMemory, FeatureCache
from videoitg.python_backend.scheduling import FeatureScheduler
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


class Reached(Exception):
    pass


def test_dali_decoder_sends_the_video_to_the_decode_step_and_a_hit_answers_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_pb_utils(monkeypatch, Tensor=lambda name, data: (name, data))
    features = importlib.import_module("videoitg.python_backend.steps")
    video = random_clip(tmp_path / "v.mp4", seed=1)
    steps = features.Steps("videoitg_decode", "videoitg_vision", "videoitg_grounding", "dali", False,
                           SamplingParams(8, 2.0), Limits(), ThreadPoolExecutor(2))
    reached: list[tuple[str, list[str], list[str]]] = []

    async def call(model: str, inputs: list, outputs: list[str]):
        reached.append((model, [name for name, _ in inputs], outputs))
        await asyncio.sleep(1.5)  # the step decoding
        raise Reached(model)

    steps.call = call
    scheduler = FeatureScheduler(FeatureCache(1 << 20), FailureMemory(), max_cold=2)
    scheduler.cache.put("cached", "features of a cached video")

    async def run() -> None:
        cold = asyncio.create_task(scheduler.features("cold", lambda: steps.visual(video), lambda e: False))
        await asyncio.sleep(0.1)  # the decode step is running
        got, hit = await scheduler.features("cached", None, lambda e: False)
        # answered while the decode is still running: it did not wait behind it
        assert (got, hit) == ("features of a cached video", True) and not cold.done()
        with pytest.raises(Reached, match="videoitg_decode"):
            await cold

    asyncio.run(run())
    # the bytes, not a plan: the step samples, checks and decodes (DALI inside it), and answers once
    assert reached == [("videoitg_decode", ["VIDEO"], ["PIXEL_VALUES", "FRAME_INDICES", "TIMESTAMPS", "DURATION"])]
