"""The self-test `videoitg serve` runs in a child process before a server starts: bounded in time, refused in one
line (its runs against DALI itself are in test_dali.py)."""

from __future__ import annotations

import time

import pytest

from videoitg.decode import selftest
from videoitg.decode.errors import DecoderUnavailableError


def test_a_self_test_that_hangs_is_killed_and_refuses_the_start_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A child stuck in the driver (here: one that sleeps) must not hold the start: past the bound it is killed
    and the start is refused in one line naming the way out."""
    monkeypatch.setattr(selftest, "_child_code", lambda device: "import time; time.sleep(600)")
    t0 = time.monotonic()
    with pytest.raises(DecoderUnavailableError) as e:
        selftest.self_test_in_child("mixed", timeout_s=1.0)
    assert time.monotonic() - t0 < 30
    msg = str(e.value)
    assert "\n" not in msg and "did not finish in 1 s" in msg and msg.endswith("serve with --decoder pyav"), msg


def test_a_failing_child_is_refused_with_its_last_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(selftest, "_child_code", lambda device: "raise SystemExit('libnvcuvid.so.1: not found')")
    with pytest.raises(DecoderUnavailableError) as e:
        selftest.self_test_in_child("mixed", timeout_s=60)
    msg = str(e.value)
    assert "\n" not in msg and "libnvcuvid.so.1: not found" in msg and msg.endswith("serve with --decoder pyav")


def test_the_child_runs_the_self_test_of_the_device_asked_for() -> None:
    assert selftest._child_code("mixed") == ("from videoitg.decode.selftest import self_test; "
                                             "self_test(device='mixed')")
