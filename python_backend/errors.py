"""The one error format of the python-backend models (`<model>: <ErrorClass>: <message>`), written and read here,
what an error means (the client's fault or the service's, remembered for its video or not), and a step that did not
answer: unavailable, or not within the request's deadline (`STEP_WAIT_S`). Without Triton's API: the answers that
carry these errors are `responses`'."""

from __future__ import annotations

import re
from functools import cache

from videoitg.errors import InputError, VideoITGError

_FORMAT = re.compile(r"(\w+): (\w+): ")
# Errors that say more about the server's load (or a file changed while it was read) than about the video:
# answered, never remembered.
TRANSIENT = frozenset({"DecodeTimeoutError", "OverloadedError", "MediaChangedError"})
# Decode errors about a path, not about the bytes a digest names: never a verdict on the content.
ABOUT_THE_PATH = frozenset({"VideoNotFoundError"})


# The longest a request waits for its steps before it is answered with StepTimeoutError naming the step that did not
# answer: just under the front's bound on an inference (300 s, `videoitg.front.config.FrontConfig.infer_timeout_s`),
# so a client hears which step hung instead of the front's "no answer". A step whose stub dies, is stopped or takes
# no request is ended much sooner by the launcher's watchdog (`videoitg.launch.supervise`; its call then fails with
# StepUnavailableError). Triton 2.51's own BLS `timeout` bounds only the time a request waits in a dynamic batcher's
# queue (where the step's queue policy allows the override), never a step that has taken the request.
STEP_WAIT_S = 290.0


class StepError(VideoITGError):
    """A step model answered with an error; its message already names the step and the cause."""


class StepUnavailableError(StepError):
    """A step could not answer: its process died (or was killed, stopped or wedged, then killed by the watchdog) or
    it was not loaded. The service's fault, and a passing one: UNAVAILABLE (retry)."""


class StepTimeoutError(StepError):
    """A step did not answer within the request's deadline (`STEP_WAIT_S`). UNAVAILABLE (retry)."""


def step_error(model: str, message: str) -> StepError:
    """The error a step's failed answer is raised as in the model that called it: the step's own error as it wrote
    it (`error_message`: it names the step), or, for a message Triton wrote instead (a stub that died:
    "Stub process 'videoitg_decode_0_0' is not healthy."; a model being reloaded), StepUnavailableError naming the
    step."""
    if message.startswith(f"{model}: "):
        return StepError(message)
    return StepUnavailableError(f"{model}: {StepUnavailableError.__name__}: {message}")


def step_timeout(model: str, waited_s: float) -> StepTimeoutError:
    return StepTimeoutError(f"{model}: {StepTimeoutError.__name__}: no answer from the step within {waited_s:.0f} s "
                            "of the request's arrival")


def step_repaired(model: str) -> StepUnavailableError:
    return StepUnavailableError(f"{model}: {StepUnavailableError.__name__}: the step was repaired (its process ended "
                                "and the model was loaded again) while this request waited for it; try again")


def error_message(exc: BaseException, model: str) -> str:
    """The message a step's error response carries. Our typed errors name their class; anything else is internal
    (its class still named, after `internal error`)."""
    if isinstance(exc, StepError):
        return str(exc)
    if isinstance(exc, VideoITGError):
        return f"{model}: {type(exc).__name__}: {exc}"
    return f"{model}: internal error: {type(exc).__name__}: {exc}"


def error_class(message: str) -> str | None:
    """The error class `error_message` wrote into `message`, None for an internal error or another format. A BLS
    response does not carry a step's error code through (Triton 2.51 reports INTERNAL), so the class is read here."""
    m = _FORMAT.match(message)
    return m.group(2) if m else None


def _class_names(base: type) -> set[str]:
    """The names of `base` and every class below it, the decoder's and the path refusals' imported first."""
    try:
        import videoitg.decode
    except ImportError:
        pass
    import videoitg.paths  # noqa: F401 - and the refusals of a video by reference
    names, todo = set(), [base]
    while todo:
        c = todo.pop()
        names.add(c.__name__)
        todo.extend(c.__subclasses__())
    return names


@cache
def input_error_names() -> frozenset[str]:
    """Class names of every InputError subclass (decode's included): a step error naming one is the client's."""
    return frozenset(_class_names(InputError))


def client_fault(exc: BaseException) -> bool:
    """The request's input is at fault: our InputError, raised here or named by a step's error message."""
    if isinstance(exc, StepError):
        return error_class(str(exc)) in input_error_names()
    return isinstance(exc, InputError)


@cache
def verdict_names() -> frozenset[str]:
    """Class names of the errors that are verdicts on a video's content: its bytes do not decode, or break a bound
    (every VideoDecodeError but the transient ones and those about a path). A refused path, a file that changed or
    could not be read, the server's own faults: none is about the bytes the video's digest names."""
    from videoitg.errors import VideoDecodeError

    return frozenset(_class_names(VideoDecodeError) - TRANSIENT - ABOUT_THE_PATH)


def remember_verdict(exc: BaseException) -> bool:
    """May the failure memory answer this error again for the same video (its cache key: the digest of the bytes
    decoded)? Only a verdict on the video's content (`verdict_names`); the decode step refuses a video by reference
    whose file changed while it was decoded (`references.decode_source`), so its verdict is on the bytes hashed."""
    name = error_class(str(exc)) if isinstance(exc, StepError) else type(exc).__name__
    return name in verdict_names()


def rejection_reason(exc: BaseException) -> str | None:
    """The reason label of `videoitg_requests{outcome="rejected"}` when the client is at fault (its error class, a
    step's included: a bounded set of names), None for a fault of the service."""
    if not client_fault(exc):
        return None
    return (error_class(str(exc)) if isinstance(exc, StepError) else None) or type(exc).__name__


def rejection_reason_of_message(message: str) -> str | None:
    """`rejection_reason` for an error response's message (`error_message`'s format)."""
    name = error_class(message)
    return name if name in input_error_names() else None


def drop_traceback(exc: BaseException) -> None:
    """Once a failed request is answered, its error keeps no frame: the traceback holds the request's frames (its
    uploaded bytes among their locals), in a cycle with the handler frame that holds the error, which only a
    garbage collection breaks. Chained errors too."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        todo += [e.__cause__, e.__context__]
