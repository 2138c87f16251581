"""How a decoupled step knows its requester can no longer take answers (`requester.Requester`,
`requester.abandoned`), against a stand-in for Triton's API."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.triton_stub import stand_in_pb_utils


class TritonError:
    INVALID_ARG, INTERNAL, NOT_FOUND, UNAVAILABLE, CANCELLED = range(5)

    def __init__(self, message: str, code: int = INTERNAL):
        self.message, self.code = message, code


class Sender:
    def __init__(self, cancelled: bool = False) -> None:
        self.cancelled, self.sent = cancelled, []

    def is_cancelled(self) -> bool:
        return self.cancelled

    def send(self, response: Any = None, flags: int = 0) -> None:
        self.sent.append((response, flags))


def request(parameters: dict[str, str]) -> types.SimpleNamespace:
    return types.SimpleNamespace(parameters=lambda: json.dumps(parameters))


@pytest.fixture()
def requester(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    logged: list[str] = []
    stand_in_pb_utils(monkeypatch, TritonError=TritonError, InferenceResponse=lambda error=None: error,
                      TRITONSERVER_RESPONSE_COMPLETE_FINAL=1,
                      Logger=types.SimpleNamespace(log_warn=logged.append, log_error=logged.append))
    # imported once the stand-in is installed: requester binds pb_utils when imported
    module = importlib.import_module("videoitg.python_backend.requester")
    module.logged = logged
    yield module
    sys.modules.pop("videoitg.python_backend.requester", None)  # bound to the stand-in: not for later tests


def test_a_requester_is_known_by_its_process_and_start_time(requester: types.ModuleType) -> None:
    me = requester.Requester(request({requester.REQUESTER: requester.requester_token()}), Sender())
    assert me.pid == os.getpid() and me.gone() is None
    reused = requester.Requester(request({requester.REQUESTER: f"{os.getpid()}:1"}),
                                 Sender())  # the pid, another process
    assert reused.gone() == f"its requester (process {os.getpid()}) is gone"
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    assert requester.Requester(request({requester.REQUESTER: f"{ended.pid}:1"}), Sender()).gone() is not None
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits, not reaped yet: a zombie is gone too
    token = f"{zombie.pid}:{open(f'/proc/{zombie.pid}/stat').read().rsplit(')', 1)[1].split()[19]}"
    try:
        exited = time.monotonic() + 30
        while open(f"/proc/{zombie.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < exited, "the child did not exit"
            time.sleep(0.005)
        assert requester.Requester(request({requester.REQUESTER: token}), Sender()).gone() is not None
    finally:
        zombie.wait()
    client = requester.Requester(request({}), Sender())  # a client's own request: no requester to watch
    assert client.pid is None and client.gone() is None
    assert requester.Requester(request({}), Sender(cancelled=True)).gone() == "it was cancelled"


def test_work_for_a_requester_that_is_gone_ends_unanswered(requester: types.ModuleType) -> None:
    """Catches: a decode step blocked for ever in a send to the top-level model's dead stub (Triton 2.51 does not
    cancel the request), every later cold request refused as overloaded."""
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    gone = Sender()
    assert requester.abandoned(requester.Requester(request({requester.REQUESTER: f"{ended.pid}:1"}), gone), gone,
                            "videoitg_decode")
    assert gone.sent == []  # nothing sent: a send to it would block
    assert requester.logged == [f"videoitg_decode: a request ended unanswered: its requester (process {ended.pid}) is "
                             "gone"]
    cancelled = Sender(cancelled=True)
    assert requester.abandoned(requester.Requester(request({}), cancelled), cancelled, "videoitg_decode")
    [(response, flags)] = cancelled.sent  # a cancelled request's final answer says so
    assert flags == 1 and response.code == TritonError.CANCELLED and "cancelled" in response.message
    live = Sender()
    assert not requester.abandoned(requester.Requester(request({requester.REQUESTER: requester.requester_token()}),
                                                       live), live, "videoitg_decode")
    assert live.sent == []
