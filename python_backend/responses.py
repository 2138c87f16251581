"""A failed request's answer in Triton's API: its status (`error_code`), its response (`error`, in the format of
`errors`), and one response per request of a batch (`respond_each`), so one bad request never fails the rest."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

import triton_python_backend_utils as pb_utils

from videoitg.admission import OverloadedError
from videoitg.errors import InputError

from .errors import StepError, StepTimeoutError, StepUnavailableError, client_fault, drop_traceback, error_message
from .scheduling import NotCachedError


def error_code(exc: BaseException) -> Any:
    """The status a failed request gets: INVALID_ARG for the client's input (also when a step named it), NOT_FOUND
    for a video named by a digest this server has not cached (the client then sends the bytes), UNAVAILABLE when
    the server is busy or a step could not answer (retry later, or elsewhere), INTERNAL for anything else."""
    e = pb_utils.TritonError
    if isinstance(exc, NotCachedError):
        return e.NOT_FOUND
    if isinstance(exc, (OverloadedError, StepUnavailableError, StepTimeoutError)):
        return e.UNAVAILABLE
    return e.INVALID_ARG if client_fault(exc) else e.INTERNAL


def error(exc: BaseException, model: str) -> Any:
    """A response that fails this request only. Anything not ours is logged with its traceback; then the error
    keeps no frame (`drop_traceback`: a refused upload is not kept alive until a garbage collection)."""
    if not isinstance(exc, (InputError, StepError, NotCachedError, OverloadedError)):
        pb_utils.Logger.log_error(f"{model}: {''.join(traceback.format_exception(exc))}")
    response = pb_utils.InferenceResponse(error=pb_utils.TritonError(error_message(exc, model), error_code(exc)))
    drop_traceback(exc)
    return response


def respond_each(requests: list[Any], handle: Callable[[Any], Any], model: str) -> list[Any]:
    """One response per request, in order: `handle(request)`, or that request's own error, so one bad request
    never fails its batch-mates."""
    responses = []
    for request in requests:
        try:
            responses.append(handle(request))
        except Exception as e:
            responses.append(error(e, model))
    return responses
