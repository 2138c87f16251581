"""What a step that cannot answer becomes in the model that called it (`errors.step_error`: an error naming the step;
`responses.error_code`: UNAVAILABLE), against a stand-in for Triton's API."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import types
from collections.abc import Iterator

import pytest

from tests.support.triton_stub import stand_in_pb_utils
from videoitg.python_backend import errors


class TritonError:
    INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE, CANCELLED = range(5)

    def __init__(self, message: str, code: int = INTERNAL):
        self.message, self.code = message, code


@pytest.fixture()
def responses(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    stand_in_pb_utils(monkeypatch, TritonError=TritonError, InferenceResponse=lambda error=None: error,
                      Logger=types.SimpleNamespace(log_warn=lambda msg: None, log_error=lambda msg: None))
    # imported once the stand-in is installed: responses binds pb_utils when imported
    module = importlib.import_module("videoitg.python_backend.responses")
    yield module
    sys.modules.pop("videoitg.python_backend.responses", None)  # bound to the stand-in: not for later tests


def test_a_step_that_could_not_answer_is_named_and_unavailable(responses: types.ModuleType) -> None:
    """Catches: "Stub process 'videoitg_decode_0_0' is not healthy." passed on as an internal error naming no step."""
    dead = errors.step_error("videoitg_decode", "Stub process 'videoitg_decode_0_0' is not healthy.")
    assert isinstance(dead, errors.StepUnavailableError)
    assert str(dead) == ("videoitg_decode: StepUnavailableError: Stub process 'videoitg_decode_0_0' is not "
                         "healthy.")
    assert responses.error_code(dead) == TritonError.UNAVAILABLE
    own = errors.step_error("videoitg_vision", "videoitg_vision: internal error: RuntimeError: x")
    assert type(own) is errors.StepError and str(own) == "videoitg_vision: internal error: RuntimeError: x"
    assert responses.error_code(own) == TritonError.INTERNAL
    late = errors.step_timeout("videoitg_grounding", errors.STEP_WAIT_S)
    assert str(late).startswith("videoitg_grounding: StepTimeoutError: no answer from the step within 290 s")
    assert responses.error_code(late) == TritonError.UNAVAILABLE
    answered = responses.error(dead, "videoitg")
    assert answered.code == TritonError.UNAVAILABLE and answered.message == str(dead)


def test_the_step_deadline_comes_before_the_fronts() -> None:
    """A client hears which step did not answer before the front's own bound on an inference answers for it."""
    from videoitg.front.config import FrontConfig

    front = {f.name: f.default for f in dataclasses.fields(FrontConfig)}["infer_timeout_s"]
    assert 0 < errors.STEP_WAIT_S < front
