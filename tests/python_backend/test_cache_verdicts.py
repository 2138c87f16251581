"""What the top-level model's failure memory may keep under a video's digest (only a verdict on the bytes that
digest names), what a non-finite answer of a step counts as (the server's failure, never the client's), and the
metric that shows damaged digest-cache entries."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from tests.support.triton_stub import stand_in_pb_utils
from videoitg.decode import DecodeTimeoutError, NotAVideoError, TruncatedVideoError, VideoTooLargeError
from videoitg.decode.errors import VideoNotFoundError
from videoitg.defaults import default_checkpoint
from videoitg.errors import NonFiniteError
from videoitg.model.files import DIGEST_CACHE, checkpoint_identity, digest_cache_damage
from videoitg.paths import MediaChangedError, MediaNotFoundError, NotARegularFileError, OutsideRootsError
from videoitg.python_backend.cache import FailureMemory, FeatureCache
from videoitg.python_backend.errors import (
    StepError,
    client_fault,
    error_message,
    rejection_reason,
    rejection_reason_of_message,
    remember_verdict,
)
from videoitg.python_backend.references import MediaReadError
from videoitg.python_backend.scheduling import FeatureScheduler


def _step(exc: Exception, model: str = "videoitg_decode") -> StepError:
    """`exc` as the top-level model receives it from a step."""
    return StepError(error_message(exc, model))


VERDICTS = [NotAVideoError("x"), TruncatedVideoError("x"), VideoTooLargeError("x")]
NOT_VERDICTS = [  # about a path, a file that changed or could not be read, the server's load or its model
    MediaNotFoundError("VIDEO_URI '/m/a.mp4' cannot be opened (No such file or directory)"),
    NotARegularFileError("x"), OutsideRootsError("x"), VideoNotFoundError("x"), MediaChangedError("x"),
    MediaReadError("VIDEO_URI '/m/a.mp4' could not be read (Input/output error)"), DecodeTimeoutError("x"),
    NonFiniteError("x"),
]


@pytest.mark.parametrize("exc", VERDICTS, ids=lambda e: type(e).__name__)
def test_a_verdict_on_the_videos_bytes_is_remembered(exc: Exception) -> None:
    assert remember_verdict(exc) and remember_verdict(_step(exc))


@pytest.mark.parametrize("exc", NOT_VERDICTS, ids=lambda e: type(e).__name__)
def test_nothing_but_a_verdict_on_the_bytes_is_remembered(exc: Exception) -> None:
    """Catches: a referenced file found gone (or replaced by a directory) remembered as the verdict on the content
    the top-level model had hashed, so that the file put back is refused meanwhile."""
    assert not remember_verdict(exc) and not remember_verdict(_step(exc))


def test_a_path_refusal_in_the_decode_step_leaves_the_video_to_be_decoded_again() -> None:
    scheduler = FeatureScheduler(FeatureCache(1 << 20), FailureMemory(), max_cold=2)
    failures = [_step(MediaNotFoundError("VIDEO_URI '/m/a.mp4' cannot be opened (No such file or directory)"))]

    async def compute() -> str:
        if failures:
            raise failures.pop()
        return "features"

    async def twice() -> tuple[str, tuple[str, bool]]:
        try:
            await scheduler.features("b3:aa|s|m", compute, remember_verdict)
        except StepError as e:
            first = str(e)
        return first, await scheduler.features("b3:aa|s|m", compute, remember_verdict)

    first, second = asyncio.run(twice())
    assert "MediaNotFoundError" in first and second == ("features", False)


@pytest.mark.parametrize("model", ["videoitg_vision", "videoitg_grounding"])
def test_non_finite_values_of_a_step_are_the_servers_failure(model: str) -> None:
    """NaN out of the vision tower reached the grounding step's input check and was answered 400, as if the
    client had sent it."""
    exc = _step(NonFiniteError("the vision tower's features (torch runtime, float32 on cpu) hold NaN"), model)
    assert not client_fault(exc) and rejection_reason(exc) is None
    assert rejection_reason_of_message(str(exc)) is None  # counted `failure`, not `rejected`


def test_the_damage_metric_shows_the_damaged_digest_cache_entries(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    ckpt = shutil.copytree(default_checkpoint(), tmp_path / "ckpt")
    checkpoint_identity(ckpt)
    cache = tmp_path / "home" / DIGEST_CACHE
    d = json.loads(cache.read_text())
    d["entries"] = {k: ("0" if v[0] != "0" else "1") + v[1:] for k, v in d["entries"].items()}  # a digest changed
    cache.write_text(json.dumps(d))
    earlier = digest_cache_damage()  # this process's count so far (other tests' damage included)
    checkpoint_identity(ckpt)
    found = digest_cache_damage()
    assert found - earlier == len(d["entries"]) >= 1  # each damaged entry counted once

    log: dict[tuple, float] = {}

    class Metric:
        def __init__(self, labels: dict[str, str]) -> None:
            self.key = tuple(sorted(labels.items()))

        def increment(self, n: float) -> None:
            log[self.key] = log.get(self.key, 0) + n

    class MetricFamily:
        COUNTER = "counter"

        def __init__(self, name: str, description: str, kind: str) -> None:
            assert name == "videoitg_cache_entries_damaged" and kind == "counter"

        def Metric(self, labels: dict[str, str]) -> Metric:
            return Metric(labels)

    stand_in_pb_utils(monkeypatch, MetricFamily=MetricFamily)
    from videoitg.python_backend.metrics import damage_metric

    metric = damage_metric("videoitg_vision")
    assert log == {(("cache", "file_digests"), ("model", "videoitg_vision")): found}
    metric.close()
    assert not hasattr(metric, "family")
