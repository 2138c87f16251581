"""Whether the requester of a decoupled request can still take its answers: the top-level model names its process
in each streamed request (`REQUESTER`, `requester_token`), and the decode step checks it before each answer
(`Requester`, `abandoned`)."""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Any

import triton_python_backend_utils as pb_utils

# A BLS request's parameter naming the process that sent it ("<pid>:<start time>", `requester_token`): a decoupled
# step checks before each answer that its requester still lives (`Requester`).
REQUESTER = "videoitg_requester"


def _proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (proc(5) field 3 on: state, ppid, ...), None when the
    process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


@cache
def requester_token() -> str:
    """This process as a requester: its pid and start time (proc(5) field 22), so a pid used again by another
    process is not taken for it."""
    fields = _proc_stat("self")
    return f"{os.getpid()}:{fields[19] if fields else ''}"


class Requester:
    """Whether the requester of a decoupled request can still take its answers. A step that streams to a BLS
    requester whose stub died must stop: Triton 2.51 does not cancel the request (`is_cancelled` stays False), and a
    send to it blocks the step for ever (the caller's backend waits for the dead stub to take the answer). The
    requester's process is named in the request's `REQUESTER` parameter (its start time too, where its /proc could be
    read); a request without it (a client's own) is checked for cancellation only."""

    def __init__(self, request: Any, sender: Any) -> None:
        self.sender = sender
        try:
            token = str(json.loads(request.parameters() or "{}").get(REQUESTER, ""))
        except (ValueError, AttributeError):
            token = ""
        pid, _, started = token.partition(":")
        self.pid, self.started = (int(pid), started) if pid.isdigit() else (None, "")

    def gone(self) -> str | None:
        """Why no answer may be sent now (None: send it): the requester's process is gone (an answer would block),
        or the request was cancelled."""
        if self.pid is not None:
            fields = _proc_stat(self.pid)
            if fields is None or fields[0] in ("Z", "X") or (self.started and fields[19] != self.started):
                return f"its requester (process {self.pid}) is gone"
        if self.sender.is_cancelled():
            return "it was cancelled"
        return None


def cancelled(model: str) -> Any:
    """The answer to a request that was cancelled (CANCELLED), not counted as answered."""
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{model}: the request was cancelled",
                                                                 pb_utils.TritonError.CANCELLED))


def abandoned(requester: Requester, sender: Any, model: str) -> bool:
    """Whether a decoupled request's work ends here, unanswered: its requester is gone (nothing is sent: a send
    would block for ever), or it was cancelled (its final answer says so)."""
    why = requester.gone()
    if why is None:
        return False
    pb_utils.Logger.log_warn(f"{model}: a request ended unanswered: {why}")
    if requester.pid is None or why == "it was cancelled":
        sender.send(cancelled(model), flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
    return True
