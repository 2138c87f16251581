"""The answer endpoint's errors, each an HTTP status with the OpenAI error object's `type` and `code`
(`AnswerError.body`), and the body of a refusal the front makes itself."""

from __future__ import annotations

from typing import Any

from videoitg.errors import InputError, VideoITGError


class AnswerError(VideoITGError):
    """A request the endpoint cannot answer; `status` is the HTTP status, `type` and `code` the OpenAI error
    object's fields (`body`)."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_request"

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        if status is not None:  # the class's own unless given (an answered one: SelectionError, UpstreamRefusedError)
            self.status = status

    def body(self) -> dict[str, Any]:
        """The OpenAI error shape: {"error": {"message", "type", "code"}}."""
        return {"error": {"message": str(self), "type": self.type, "code": self.code}}


class ChatRequestError(AnswerError, InputError):
    """The body is not a chat-completions request this endpoint answers (not JSON, no messages, ...)."""


class VideoPartError(ChatRequestError):
    """The request does not hold exactly one video part, in its last user message, with a question beside it."""

    code = "video_part"


class VideoRefusedError(ChatRequestError):
    """The video part names no video the server may read: another URL scheme, malformed base64, a path outside the
    media roots (the subclass of `PathRefusedError` is named in the message)."""

    code = "video_refused"


class OptionError(ChatRequestError):
    """A field of the `videoitg` extension object is out of range or of the wrong type."""

    code = "videoitg_option"


class SelectionError(AnswerError):
    """The grounding model refused or failed the video (an undecodable video, an instruction over its bound: the
    server's own message), with the status the server answered."""

    type = "selection_error"
    code = "selection_failed"


class UpstreamRefusedError(AnswerError):
    """The video-LLM answered with an error: its status, its text wrapped."""

    type = "upstream_error"
    code = "upstream_refused"


class UpstreamUnavailableError(AnswerError):
    """The video-LLM could not be reached, or its answer broke off or was not what the protocol says."""

    status = 502
    type = "upstream_error"
    code = "upstream_unavailable"


class UpstreamTimeoutError(AnswerError):
    """The video-LLM did not answer within the bound."""

    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class OverloadedError(AnswerError):
    """The server holds as many bytes as its budget allows now: retry shortly."""

    status = 503
    code = "overloaded"


class InternalError(AnswerError):
    """Something the endpoint did not foresee failed; the server's log has the details."""

    status = 500
    type = "server_error"
    code = "internal_error"


def refusal_body(message: str, code: str) -> dict[str, Any]:
    """The OpenAI error shape of a refusal the front makes itself (body over its bound, too slow, overloaded)."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}
