"""The top-level model's memory of videos that failed: same error at once, forgotten after its time, bounded."""

from __future__ import annotations

import pytest

from videoitg.errors import VideoDecodeError
from videoitg.serving import cache as cache_mod
from videoitg.serving.cache import FailureMemory


def test_failure_is_remembered_until_its_time_is_up(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(cache_mod.time, "monotonic", lambda: now[0])
    m = FailureMemory(ttl_s=60.0)
    err = VideoDecodeError("video is corrupt")
    m.remember("k", err)
    assert m.get("k") is err and m.get("other") is None
    now[0] += 59.9
    assert m.get("k") is err
    now[0] += 0.1
    assert m.get("k") is None and len(m) == 0


def test_failure_memory_is_bounded_oldest_first() -> None:
    m = FailureMemory(capacity=3)
    for i in range(5):
        m.remember(str(i), VideoDecodeError(str(i)))
    assert len(m) == 3 and m.get("0") is None and m.get("1") is None
    assert str(m.get("4")) == "4"
