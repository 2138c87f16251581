"""The front's process settings (process.py): its environment and the heap trimmed after request bytes are
released."""

from __future__ import annotations

import asyncio

import pytest

from videoitg.front import bounds, process


@pytest.mark.parametrize(("given", "want"), [
    (None, "glibc.malloc.hugetlb=1"),
    ("glibc.malloc.arena_max=2", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"),
    ("glibc.malloc.hugetlb=0", "glibc.malloc.hugetlb=0"),  # an operator's own setting wins
])
def test_the_fronts_environment_asks_for_huge_pages_unless_told_otherwise(given: str | None, want: str) -> None:
    base = {"PATH": "/bin"} | ({"GLIBC_TUNABLES": given} if given is not None else {})
    assert process.environment(base) == {"PATH": "/bin", "GLIBC_TUNABLES": want}


def test_the_heap_is_trimmed_once_enough_request_bytes_were_released(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "TRIM_EVERY_S", 0.01)
    trims = []
    monkeypatch.setattr(process, "trim_freed_memory", lambda: trims.append(1) or True)
    budget = bounds.ByteBudget(1 << 30)

    async def run() -> None:
        task = asyncio.ensure_future(process.trim_after_release(budget))
        assert budget.take(process.TRIM_BYTES)
        budget.give(process.TRIM_BYTES - 1)  # not yet enough released
        await asyncio.sleep(0.05)
        assert trims == [] and budget.high == process.TRIM_BYTES
        budget.give(1)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(run())
    assert trims == [1] and budget.high == budget.held == 0
