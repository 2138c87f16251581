"""The decode step's own policy, against a stand-in for Triton's API: a request cancelled while it waited for the
unstreamed step is answered CANCELLED and never decoded (the streamed step: `test_videoitg_bls.py`)."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator

import pytest

from tests.support.triton_stub import stand_in_pb_utils


class TritonError:
    INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE, CANCELLED = range(5)

    def __init__(self, message: str, code: int = INTERNAL):
        self.message, self.code = message, code


class Request:
    def __init__(self, name: str, cancelled: bool) -> None:
        self.name, self.cancelled = name, cancelled

    def is_cancelled(self) -> bool:
        return self.cancelled


@pytest.fixture()
def decode(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    before = set(sys.modules)
    stand_in_pb_utils(monkeypatch, TritonError=TritonError, InferenceResponse=lambda error=None: error)
    yield importlib.import_module("videoitg.python_backend.decode")
    for name in set(sys.modules) - before:  # bound to the stand-in: not for later tests
        if name.startswith("videoitg.python_backend"):
            sys.modules.pop(name)


def test_a_request_cancelled_while_it_waited_for_the_unstreamed_step_is_never_decoded(
        decode: types.ModuleType) -> None:
    """Catches: without Triton's dynamic batcher, which dropped a cancelled request from its queue, the step decoded
    it (up to its whole decode budget) for nobody."""
    step = decode.TritonPythonModel.__new__(decode.TritonPythonModel)
    step.name, step.streaming = "videoitg_decode", False
    counted: list[object] = []
    step.counters = types.SimpleNamespace(count=lambda answers: counted.extend(answers) or answers)
    decoded: list[str] = []
    step._decode = lambda request: decoded.append(request.name) or f"frames of {request.name}"
    answers = step.execute([Request("a", False), Request("b", True), Request("c", False)])
    assert decoded == ["a", "c"]
    assert answers[0] == "frames of a" and answers[2] == "frames of c"
    assert (answers[1].code, answers[1].message) == (TritonError.CANCELLED, f"{step.name}: the request was cancelled")
    assert counted == ["frames of a", "frames of c"]  # a cancelled request is not answered work, nor a failure
