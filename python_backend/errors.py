"""The one error format of the python-backend models (`<model>: <ErrorClass>: <message>`), written and read here,
and what an error means: the client's fault or the service's, remembered for its video or not."""

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


class StepError(VideoITGError):
    """A step model answered with an error; its message already names the step and the cause."""


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
