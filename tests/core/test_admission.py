"""The asyncio admission line (`videoitg.admission.WaitingGate`) on its own: waiting in turn for a freed slot,
refused at once past its bounds, refused after its wait."""

from __future__ import annotations

import asyncio
import time

import pytest

from videoitg.admission import OverloadedError, WaitingGate


def test_waiters_take_freed_slots_in_turn() -> None:
    async def run() -> list[int]:
        told: list[int] = []
        gate, order = WaitingGate(1, max_waiting=3, on_wait=told.append), []
        await gate.enter(1.0)

        async def wait(i: int) -> None:
            await gate.enter(5.0)
            order.append(i)
            await asyncio.sleep(0.01)
            await gate.leave()

        waiters = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0.05)
        assert gate.waiting == 3 and gate.in_flight == 1
        await gate.leave()
        await asyncio.gather(*waiters)
        assert gate.waiting == 0 and gate.in_flight == 0 and gate.refused == 0
        assert told == [1, 2, 3, 2, 1, 0]  # the line's gauge
        return order

    assert asyncio.run(run()) == [0, 1, 2]


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_past_the_line_a_request_is_refused_at_once(bound: str) -> None:
    async def run() -> float:
        gate = WaitingGate(1, max_waiting=2 if bound == "count" else None, max_waiting_bytes=100)
        await gate.enter(1.0)
        held = [asyncio.create_task(gate.enter(5.0, 40)) for _ in range(2)]  # 2 waiting, 80 bytes
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        with pytest.raises(OverloadedError, match="1 requests in flight and 2 waiting"):
            await gate.enter(5.0, 10 if bound == "count" else 30)
        took = time.monotonic() - t0
        assert gate.refused == 1 and gate.waiting == 2 and gate.waiting_bytes == 80
        for t in held:
            t.cancel()
        return took

    assert asyncio.run(run()) < 0.05


def test_a_waiter_not_served_within_its_wait_is_refused() -> None:
    async def run() -> float:
        gate = WaitingGate(1, max_waiting=4)
        await gate.enter(1.0)
        t0 = time.monotonic()
        with pytest.raises(OverloadedError, match="1 requests already in flight"):
            await gate.enter(0.2, 1000)
        took = time.monotonic() - t0
        assert gate.waiting == 0 and gate.waiting_bytes == 0 and gate.refused == 1 and gate.in_flight == 1
        await gate.leave()
        await gate.enter(0.2)  # the slot is free again
        return took

    assert 0.2 <= asyncio.run(run()) < 1.0
