"""`videoitg.python_backend.errors`: the step error format, written and read in one place, and what the feature
cache's failure memory may keep."""

from __future__ import annotations

import asyncio
import gc
import sys
import types
import weakref

import pytest

from tests.support.triton_stub import stand_in_pb_utils
from videoitg.admission import OverloadedError
from videoitg.decode import DecodeTimeoutError, NotAVideoError
from videoitg.errors import CheckpointError, InputError
from videoitg.python_backend.cache import FailureMemory, FeatureCache
from videoitg.python_backend.errors import (
    StepError,
    client_fault,
    drop_traceback,
    error_class,
    error_message,
    input_error_names,
    rejection_reason,
    rejection_reason_of_message,
    remember_verdict,
)
from videoitg.python_backend.scheduling import FeatureScheduler

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


def test_rejections_are_the_clients_faults_by_class() -> None:
    """`videoitg_requests{outcome="rejected", reason=...}` for what the client got wrong; failure (what an alert
    fires on) only for the service's own faults."""
    assert rejection_reason(NotAVideoError("x")) == "NotAVideoError"
    assert rejection_reason(InputError("x")) == "InputError"
    assert rejection_reason(StepError(error_message(NotAVideoError("x"), "videoitg_decode"))) == "NotAVideoError"
    assert rejection_reason(StepError(error_message(RuntimeError("x"), "videoitg_decode"))) is None
    assert rejection_reason(RuntimeError("boom")) is None and rejection_reason(CheckpointError("x")) is None
    assert rejection_reason(OverloadedError("busy")) is None
    assert rejection_reason_of_message(error_message(NotAVideoError("x"), "videoitg_decode")) == "NotAVideoError"
    assert rejection_reason_of_message(error_message(RuntimeError("x"), "videoitg_decode")) is None


class Upload(bytearray):
    """Request bytes that can be watched (weakref)."""


def test_an_answered_failure_holds_no_reference_to_the_request() -> None:
    """The top-level model's pattern: a task awaits the scheduler, catches the error into a local, answers it. The
    error's traceback held that frame (a cycle) and the frames below it with the upload among their locals, so
    distinct refused uploads, and their retries, stayed in memory until a garbage collection (RSS 165 -> 467 MiB
    after 8 refused 16 MiB uploads and 8 retries, still so past the failure memory's TTL)."""
    scheduler = FeatureScheduler(FeatureCache(1 << 20), FailureMemory(), max_cold=2)

    async def serve(upload: Upload, key: str, release: bool) -> str:
        async def answer() -> None:
            data = upload

            async def compute() -> None:
                raise NotAVideoError(f"{len(data)} bytes are not a video")

            await scheduler.features(key, compute, remember_verdict)

        try:
            await answer()
            exc = None
        except Exception as e:
            exc = e
        if release:
            drop_traceback(exc)  # what `responses.error` does once the response is built
        return type(exc).__name__

    def held_after(key: str, release: bool) -> bool:
        upload = Upload(1 << 20)
        ref = weakref.ref(upload)
        assert asyncio.run(serve(upload, key, release)) == "NotAVideoError"
        del upload
        return ref() is not None

    gc.collect()
    gc.disable()
    try:
        assert held_after("a", release=False)  # the cycle this closes: held until a collection
        assert not held_after("b", release=True)  # the first refusal
        assert not held_after("b", release=True)  # a retry, answered from the failure memory
    finally:
        gc.enable()


def test_chained_errors_lose_their_tracebacks_too() -> None:
    try:
        try:
            raise ValueError("inner")
        except ValueError as inner:
            raise InputError("outer") from inner
    except InputError as e:
        outer = e
    assert outer.__traceback__ is not None and outer.__cause__.__traceback__ is not None
    drop_traceback(outer)
    assert outer.__traceback__ is None and outer.__cause__.__traceback__ is None


class _Metric:
    def __init__(self, labels: dict[str, str], log: dict[tuple, float]):
        self.key, self.log = tuple(sorted(labels.items())), log

    def increment(self, n: float) -> None:
        self.log[self.key] = self.log.get(self.key, 0) + n


def test_answered_errors_and_request_counters(monkeypatch: pytest.MonkeyPatch) -> None:
    """`metrics.RequestCounters` against a stand-in for Triton's metric API (its MetricFamily / Metric calls)."""
    log: dict[tuple, float] = {}
    class MetricFamily:
        COUNTER, GAUGE = "counter", "gauge"

        def __init__(self, name: str, description: str, kind: str):
            pass

        def Metric(self, labels: dict[str, str]) -> _Metric:
            return _Metric(labels, log)

    class Response:
        def __init__(self, message: str | None):
            self.message = message

        def has_error(self) -> bool:
            return self.message is not None

        def error(self) -> types.SimpleNamespace:
            return types.SimpleNamespace(message=lambda: self.message)

    class TritonError:
        INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE = range(4)

        def __init__(self, message: str, code: int):
            self.message, self.code = message, code

    stand_in_pb_utils(monkeypatch, MetricFamily=MetricFamily, TritonError=TritonError,
                      InferenceResponse=lambda error: error)
    # imported once the stand-in is installed: metrics and responses bind pb_utils when imported
    from videoitg.python_backend.metrics import RequestCounters
    from videoitg.python_backend.responses import error

    try:
        raise NotAVideoError("not a video")
    except NotAVideoError as e:
        answered = e
    response = error(answered, "videoitg")
    assert response.code == TritonError.INVALID_ARG and "NotAVideoError: not a video" in response.message
    assert answered.__traceback__ is None  # once answered, the error holds no frame of the request

    c = RequestCounters("videoitg")
    c.record(None)
    c.record(NotAVideoError("x"))
    c.record(StepError(error_message(NotAVideoError("x"), "videoitg_decode")))
    c.record(RuntimeError("boom"))
    c.count([Response(None), Response(error_message(InputError("x"), "videoitg_decode")),
             Response(error_message(RuntimeError("x"), "videoitg_decode"))])

    def n(**labels: str) -> float:
        return log.get(tuple(sorted({"model": "videoitg", **labels}.items())), 0)

    assert n(outcome="success") == 2 and n(outcome="failure") == 2
    assert n(outcome="rejected", reason="NotAVideoError") == 2 and n(outcome="rejected", reason="InputError") == 1
    c.close()
    # closed (the model unloading): a request a thread still answers is answered, not counted, and raises nothing
    before = dict(log)
    responses = [Response(None), Response(error_message(RuntimeError("x"), "videoitg_decode"))]
    assert c.count(responses) is responses
    c.record(RuntimeError("late"))
    assert log == before
    for name in ("metrics", "responses"):
        sys.modules.pop(f"videoitg.python_backend.{name}", None)  # bound to the stand-in: not for later tests


def test_a_finalized_model_closes_its_metrics_and_leaves_its_heap_to_the_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """`metrics.finalized`, a model's last step: its metrics closed, and what is alive frozen out of garbage collection,
    so the stub's exit (what unloading waits for) does not walk the heap."""
    stand_in_pb_utils(monkeypatch)
    from videoitg.python_backend.metrics import finalized

    closed = []
    metric = types.SimpleNamespace(close=lambda: closed.append(1))
    alive_before = [closed]  # tracked by the collector (a count of all objects would move with other threads')
    assert any(o is alive_before for o in gc.get_objects())
    try:
        finalized(metric, metric)
        assert closed == [1, 1]
        # out of the collector's reach: get_objects lists the collected generations, not the frozen one
        assert not any(o is alive_before for o in gc.get_objects()) and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        sys.modules.pop("videoitg.python_backend.metrics", None)
