"""The top-level model's waits for its steps (`videoitg.python_backend.steps`), against a stand-in for Triton's BLS
API: each ends by the request's deadline with an error naming the step, a step that could not answer is named, and
a streamed decode names its requester."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import threading
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.triton_stub import stand_in_pb_utils
from videoitg.contract.repairs import RepairsSeen, RepairsWritten
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


class Failed:
    """A BLS answer that carries an error, as Triton writes it for a stub that died."""

    def __init__(self, message: str) -> None:
        self.message = message

    def has_error(self) -> bool:
        return True

    def error(self) -> types.SimpleNamespace:
        return types.SimpleNamespace(message=lambda: self.message)


class Stream:
    """A decoupled step's answers that never come (a step stopped, or blocked in a send)."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Any:
        self.release.wait()
        raise StopIteration


@pytest.fixture()
def steps(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    release = threading.Event()
    sent: list[dict[str, Any]] = []

    class InferenceRequest:
        def __init__(self, model_name: str, inputs: list, requested_output_names: list[str],
                     parameters: dict[str, str] | None = None) -> None:
            self.model = model_name
            sent.append({"model": model_name, "parameters": parameters})

        def async_exec(self, decoupled: bool = False) -> asyncio.Future:
            def answer() -> Any:
                if decoupled:
                    return Stream(release)
                if self.model == "videoitg_grounding":  # hangs: stopped
                    release.wait()
                return Failed(f"Stub process '{self.model}_0_0' is not healthy.")

            return asyncio.get_running_loop().run_in_executor(None, answer)

    stand_in_pb_utils(monkeypatch, InferenceRequest=InferenceRequest, Tensor=lambda name, data: (name, data),
                      TritonError=types.SimpleNamespace(INVALID_ARG=0, INTERNAL=1, NOT_FOUND=2, UNAVAILABLE=3))
    sys.modules.pop("videoitg.python_backend.steps", None)
    module = importlib.import_module("videoitg.python_backend.steps")
    module.sent, module.release = sent, release
    yield module
    release.set()  # the threads that waited on a step end
    sys.modules.pop("videoitg.python_backend.steps", None)


def _steps(module: types.ModuleType, streaming: bool) -> Any:
    return module.Steps("videoitg_decode", "videoitg_vision", "videoitg_grounding", "pyav", streaming,
                        SamplingParams(8, 2.0), Limits(), ThreadPoolExecutor(2))


def _within(module: types.ModuleType, seconds: float, work: Any) -> tuple[BaseException | None, float]:
    """Run `work()` (a coroutine) in a request's task whose deadline is `seconds` away: its error and how long."""
    async def request() -> BaseException | None:
        module.DEADLINE.set(asyncio.get_running_loop().time() + seconds)
        try:
            await work()
        except Exception as e:
            return e
        return None

    loop = asyncio.new_event_loop()  # closed without waiting for its executor's threads: a step's may not end
    t0 = time.monotonic()
    try:
        err = loop.run_until_complete(request())
    finally:
        loop.close()
    return err, time.monotonic() - t0


def test_a_step_that_does_not_answer_ends_the_request_by_its_deadline_naming_it(steps: types.ModuleType) -> None:
    """Catches: a request waiting for ever on a step that was stopped (Triton 2.51's BLS timeout bounds only the
    time in a batcher's queue, not a step that took the request)."""
    s = _steps(steps, streaming=False)
    err, took = _within(steps, 0.3, lambda: s.call("videoitg_grounding", [], ["LOGITS"]))
    assert type(err).__name__ == "StepTimeoutError" and str(err).startswith("videoitg_grounding: StepTimeoutError")
    assert 0.25 < took < 30  # ended by its deadline, not left waiting


def test_a_step_whose_stub_died_is_named(steps: types.ModuleType) -> None:
    s = _steps(steps, streaming=False)
    err, took = _within(steps, 10.0, lambda: s.call("videoitg_vision", [], ["FEATURES"]))
    assert type(err).__name__ == "StepUnavailableError"  # named at once: not a StepTimeoutError at 10 s
    assert str(err) == "videoitg_vision: StepUnavailableError: Stub process 'videoitg_vision_0_0' is not healthy."


def test_a_stream_that_stops_ends_by_the_deadline_and_names_its_requester(steps: types.ModuleType) -> None:
    """The decode's stream read in a worker thread that may never return: the request still ends by its deadline
    (its worker is left to the step's end), and the decode step is told who asked (`REQUESTER`)."""
    s = _steps(steps, streaming=True)
    err, took = _within(steps, 0.3, lambda: s.visual(b"video bytes"))
    assert type(err).__name__ == "StepTimeoutError" and str(err).startswith("videoitg_decode: StepTimeoutError")
    assert took < 30  # ended by its deadline, not left waiting
    [decode] = steps.sent
    requester = sys.modules["videoitg.python_backend.requester"]
    assert decode["model"] == "videoitg_decode" and decode["parameters"] == {
        requester.REQUESTER: requester.requester_token()}
    pid, _, started = decode["parameters"][requester.REQUESTER].partition(":")
    assert int(pid) > 0 and started.isdigit()


def test_without_a_deadline_a_wait_is_not_bounded(steps: types.ModuleType) -> None:
    """Outside a request (the step calls of a test, a warm-up) nothing is cut short."""
    async def run() -> str:
        return await steps.bounded("videoitg_vision", asyncio.sleep(0.05, result="answer"))

    assert asyncio.run(run()) == "answer"
    assert json.dumps(steps.DEADLINE.get()) == "null"


def _repaired_later(tmp_path: Path, model: str, after_s: float) -> threading.Thread:
    """The launcher's word that `model` was repaired, written `after_s` from now (`contract.repairs`)."""
    written = RepairsWritten(tmp_path / "steps")
    th = threading.Timer(after_s, written.repaired, args=(model,))
    th.start()
    return th


@pytest.mark.parametrize("streaming", [False, True])
def test_a_step_repaired_while_a_request_waits_for_it_ends_the_request_naming_it(
        steps: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, streaming: bool) -> None:
    """Catches: a request sent to a step whose instance the watchdog then unloaded (a stub stopped or wedged, killed)
    waited until its 290 s deadline, holding its cold slot: tritonserver 2.51 never answers it. Once the launcher
    says the step was repaired, the request ends naming the step, UNAVAILABLE (try again)."""
    model = "videoitg_decode" if streaming else "videoitg_grounding"
    monkeypatch.setattr(steps, "REPAIRS", RepairsSeen(str(tmp_path / "steps" / "repairs")))
    s = _steps(steps, streaming)
    work = (lambda: s.visual(b"video bytes")) if streaming else (lambda: s.call(model, [], ["LOGITS"]))
    _repaired_later(tmp_path, model, 0.3)
    err, took = _within(steps, 30.0, work)
    assert type(err).__name__ == "StepUnavailableError", err
    assert str(err).startswith(f"{model}: StepUnavailableError: the step was repaired"), err
    assert 0.3 < took < 5, took  # within a look (0.5 s) of the word, not at the deadline


def test_a_repair_before_the_request_was_sent_or_of_another_step_does_not_end_it(
        steps: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a request sent before the repair is one tritonserver will not answer."""
    written = RepairsWritten(tmp_path / "steps")
    written.repaired("videoitg_grounding")  # before the request
    monkeypatch.setattr(steps, "REPAIRS", RepairsSeen(str(written.path)))
    s = _steps(steps, streaming=False)
    _repaired_later(tmp_path, "videoitg_vision", 0.2)  # another step, while it waits
    err, took = _within(steps, 1.5, lambda: s.call("videoitg_grounding", [], ["LOGITS"]))
    assert type(err).__name__ == "StepTimeoutError", err  # waited for its deadline, as before
    assert took > 1.4


@pytest.mark.parametrize("repaired", [True, False])
def test_a_stream_that_ended_without_frames_is_a_repair_once_the_launcher_says_so(
        steps: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, repaired: bool) -> None:
    """Catches: a decode stub killed under a stream (a soak's repair) could end the stream with no answer and no
    error, and the request was answered "internal error" (a client does not retry it). The launcher's word of the
    step's repair, which comes after the stream ended, makes it UNAVAILABLE naming the step; without that word it
    stays an internal error."""
    monkeypatch.setattr(steps, "REPAIRS", RepairsSeen(str(tmp_path / "steps" / "repairs")))
    monkeypatch.setattr(steps, "REPAIR_WORD_S", 1.0)
    steps.release.set()  # the stream ends at once, empty
    s = _steps(steps, streaming=True)
    if repaired:
        _repaired_later(tmp_path, "videoitg_decode", 0.3)
    err, took = _within(steps, 30.0, lambda: s.visual(b"video bytes"))
    if repaired:
        assert type(err).__name__ == "StepUnavailableError", err
        assert str(err).startswith("videoitg_decode: StepUnavailableError: the step was repaired"), err
        assert 0.3 < took < 1.0, took  # at the word, not after the whole wait
    else:
        assert type(err).__name__ == "StepError", err
        assert str(err) == "videoitg_decode: internal error: the stream ended without frames", err
        assert 1.0 <= took < 10, took
