"""`videoitg.python_backend.errors`: the step error format, written and read in one place, and what the feature
cache's failure memory may keep."""

from __future__ import annotations

from videoitg.python_backend.errors import (
    StepError,
    client_fault,
    error_class,
    error_message,
    input_error_names,
    remember_verdict,
)

from videoitg.decode import DecodeTimeoutError, NotAVideoError
from videoitg.errors import CheckpointError, InputError
from videoitg.limits import OverloadedError

NAMES = input_error_names()


def test_the_reader_reads_what_the_writer_writes() -> None:
    cases = ((NotAVideoError("not a video: x"), "NotAVideoError"), (CheckpointError("bad: y"), "CheckpointError"),
             (InputError("INSTRUCTION: z"), "InputError"))
    for exc, cls in cases:
        msg = error_message(exc, "videoitg_decode")
        assert msg.startswith("videoitg_decode: ") and error_class(msg) == cls
    internal = error_message(RuntimeError("boom: 1"), "videoitg_vision")
    assert internal == "videoitg_vision: internal error: RuntimeError: boom: 1" and error_class(internal) is None
    assert error_message(StepError("videoitg_decode: NotAVideoError: x"), "videoitg") == \
        "videoitg_decode: NotAVideoError: x"  # a step's message passes through unchanged


def test_client_fault_from_a_step_message_or_our_own_error() -> None:
    assert "NotAVideoError" in NAMES and "DecodeTimeoutError" in NAMES
    assert client_fault(StepError(error_message(NotAVideoError("x"), "videoitg_decode")))
    assert not client_fault(StepError(error_message(RuntimeError("x"), "videoitg_decode")))
    assert not client_fault(StepError(error_message(CheckpointError("x"), "videoitg_vision")))
    assert client_fault(InputError("x")) and not client_fault(RuntimeError("x"))


def test_only_verdicts_about_the_video_are_remembered() -> None:
    """A decode that ran out of time under load says more about the server than the video: never remembered."""
    assert remember_verdict(StepError(error_message(NotAVideoError("x"), "videoitg_decode")))
    assert remember_verdict(NotAVideoError("x"))
    assert not remember_verdict(StepError(error_message(DecodeTimeoutError("budget"), "videoitg_decode")))
    assert not remember_verdict(DecodeTimeoutError("budget"))
    assert not remember_verdict(OverloadedError("busy"))
    assert not remember_verdict(StepError(error_message(RuntimeError("x"), "videoitg_vision")))
