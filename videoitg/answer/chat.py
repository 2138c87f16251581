"""Select, then answer: an OpenAI chat-completions request whose last user message holds one video, answered by a
video-LLM from the frames VideoITG picks for the question. The policy, pure and without a server (docs/answer.md):
read and check the request (`load_body`, `parse_chat`), name its video (`video_source`), let go of it once read
(`without_video`), build what the video-LLM is sent (`forwarded`: the video part replaced by the chosen frames,
everything else as it came), the `videoitg` field of the answer (`Selection.field`), the first event of a streamed
answer (`with_selection`), and each error in the OpenAI shape (`AnswerError.body`).

The served endpoint (`videoitg serve --answer-upstream URL`) and the one-off command (`videoitg answer`) both call it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import copy
import json
import math
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from videoitg.answer.handoff import frame_parts, frame_parts_json
from videoitg.errors import InputError, VideoITGError
from videoitg.jsonio import MAX_JSON_DEPTH, nesting_over, no_constant
from videoitg.paths import MediaRoots, PathRefusedError, open_resolved, shown
from videoitg.request.options import RequestOptions

EXTENSION = "videoitg"  # the request's extension object, and the answer's added field
EXTENSION_OPTIONS = ("top_k", "frame_size")  # what it may set (`videoitg.request.options.OPTIONS`: their bounds)
# The chosen frames' longer side unless the request says (`frame_size`; 0: the video's own size). 448 px is a common
# input size of the open video-LLMs; a frame at a video's own size costs a model like Qwen2.5-VL many more tokens.
DEFAULT_FRAME_SIZE = 448
# Objects, lists and separators in a request, counted as its '{', '[' and ',' bytes before it is parsed (in its text
# too; base64 has none of them): a message needs a few, a tool's JSON schema some tens to hundreds, and a text of
# about 1 MB of prose (a comma every 15 characters or so) fits, more than a video-LLM's context holds. The costliest
# body at the bound (32,768 empty objects) parses in about 15 ms into 4.4 MiB; 24 MiB of them would take 6 s and
# 1.2 GiB.
MAX_JSON_ITEMS = 65_536
# Digits of an integer in a request (a seed or a token id has at most 20): Python converts one in time that grows
# with the square of its digits, 65 us for 4,300 (its own bound), which MAX_JSON_ITEMS of them would make 4 s.
MAX_INT_DIGITS = 100
COUNT_BYTES = 1 << 20  # of a body counted at once
B64_SLICE = 1 << 20  # base64 characters decoded at once (a multiple of 4)
PATHS = ("/v1/chat/completions", "/v1/models")
VIDEO_READ = {"type": f"{EXTENSION}-video-read"}  # the video part once its video is read (`without_video`)
_DATA_URL = re.compile(r"data:(video/[A-Za-z0-9.+-]{1,64});base64,", re.ASCII)


# ---- errors: each one a status, an OpenAI error type and a code ------------------------------------------------
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


def refusal_body(message: str, code: str) -> dict[str, Any]:
    """The OpenAI error shape of a refusal the front makes itself (body over its bound, too slow, overloaded)."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


# ---- the request -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatQuestion:
    """A checked chat request: where its video part is, the question, and how many frames of what size to pick."""

    body: dict[str, Any]  # the request as it came, the extension object removed
    message: int  # index of the last user message in body["messages"]
    part: int  # index of the video part in its content
    video_url: str
    question: str  # the message's text parts, joined by newlines: the grounding instruction
    # What to pick: JPEG frames; top_k None: the grounding server's default (DEFAULT_TOP_K unless its operator set
    # another); frame_size their longer side in pixels, 0 the video's own size.
    options: RequestOptions


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: not a literal NaN or Infinity, yet a float that is one
        raise ChatRequestError(f"request JSON holds a number out of range ({text[:40]})")
    return value


def _bounded_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise ChatRequestError(f"request JSON holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def load_body(body: bytes | list[bytes]) -> Any:
    """The request's JSON, from its bytes or the chunks it came in (a list, emptied as it is read): at most
    MAX_JSON_ITEMS objects, lists and commas, UTF-8, no NaN or Infinity (nor a number that overflows to one),
    integers of at most MAX_INT_DIGITS digits, nesting bounded; ChatRequestError naming what is wrong. The chunks
    are counted and decoded one at a time, so that in a worker thread the event loop runs between them; joining
    their text and the one JSON parse of it hold the GIL throughout (the loop waits about 45 ms for a 53 MiB body:
    `python -m benchmarks.answer_parse`, docs/answer.md)."""
    chunks = [body] if isinstance(body, bytes) else body
    try:
        texts = _decoded(chunks)
    finally:
        chunks.clear()
    text = texts[0] if len(texts) == 1 else "".join(texts)
    texts.clear()
    try:
        value = json.loads(text, parse_constant=no_constant, parse_float=_finite, parse_int=_bounded_int)
    except RecursionError:
        raise ChatRequestError(f"request JSON nests more than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:
        raise ChatRequestError(f"request body is not valid JSON ({str(e)[:120]})") from None
    if nesting_over(value, MAX_JSON_DEPTH):
        raise ChatRequestError(f"request JSON nests more than {MAX_JSON_DEPTH} levels")
    return value


def _decoded(chunks: list[bytes]) -> list[str]:
    """The text of a body's chunks (each decoded, then dropped from the list), once its count of '{', '[' and ','
    is known to be within MAX_JSON_ITEMS."""
    items = 0
    for chunk in chunks:
        for at in range(0, len(chunk), COUNT_BYTES):
            end = at + COUNT_BYTES
            items += chunk.count(b"{", at, end) + chunk.count(b"[", at, end) + chunk.count(b",", at, end)
        if items > MAX_JSON_ITEMS:
            raise ChatRequestError(f"request JSON holds more than {MAX_JSON_ITEMS} objects, lists and commas (its "
                                   "'{', '[' and ',' bytes, in its text too)")
    decoder = codecs.getincrementaldecoder("utf-8")()
    texts, before, pending = [], 0, 0
    try:
        for i, chunk in enumerate(chunks):
            pending = len(decoder.getstate()[0])  # the bytes of a character the previous chunk began
            texts.append(decoder.decode(chunk))
            before += len(chunk)
            chunks[i] = b""
        pending = len(decoder.getstate()[0])
        decoder.decode(b"", final=True)  # "" unless the body ends inside a character
    except UnicodeDecodeError as e:
        raise ChatRequestError(f"request body is not valid UTF-8 ({e.reason} at byte {before - pending + e.start})"
                               ) from None
    return texts


def parse_chat(body: Any) -> ChatQuestion:
    """Check a chat-completions request (parsed JSON) and find its video: exactly one `video_url` part in the whole
    request, in the last user message, beside at least one text part (the question). The `videoitg` extension object
    (EXTENSION_OPTIONS, bounded as `videoitg.request.options.OPTIONS` declares; `top_k` default the grounding
    server's, `frame_size` default DEFAULT_FRAME_SIZE) is read and removed; every other field stays as it came."""
    if not isinstance(body, dict):
        raise ChatRequestError("request body must be a JSON object (an OpenAI chat-completions request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ChatRequestError("'messages' must be a non-empty list of message objects")
    try:
        options = RequestOptions.from_object(body.get(EXTENSION, {}), EXTENSION_OPTIONS, EXTENSION,
                                             {"frames": "jpeg", "frame_size": DEFAULT_FRAME_SIZE})
    except InputError as e:
        raise OptionError(str(e)) from None
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    if not users:
        raise VideoPartError("the request has no user message: the last one must hold the video and the question")
    last = users[-1]
    videos = [(i, j) for i, m in enumerate(messages) if isinstance(m.get("content"), list)
              for j, p in enumerate(m["content"]) if isinstance(p, dict) and p.get("type") == "video_url"]
    if len(videos) != 1:
        raise VideoPartError(f"the request holds {len(videos)} video parts: it must hold exactly one "
                             "({\"type\": \"video_url\", \"video_url\": {\"url\": ...}}), in its last user message")
    message, part = videos[0]
    if message != last:
        raise VideoPartError(f"the video part is in messages[{message}]: it must be in the last user message "
                             f"(messages[{last}])")
    content = messages[last]["content"]
    video = content[part].get("video_url")
    url = video.get("url") if isinstance(video, dict) else None
    if not isinstance(url, str) or not url:
        raise VideoPartError(f"messages[{last}].content[{part}].video_url must be an object with a string 'url'")
    texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    if not all(isinstance(t, str) for t in texts):
        raise ChatRequestError(f"every text part of messages[{last}] must have a string 'text'")
    question = "\n".join(t.strip() for t in texts if t.strip())
    if not question:
        raise VideoPartError(f"messages[{last}] has no question: add a text part beside the video")
    rest = {k: v for k, v in body.items() if k != EXTENSION}
    return ChatQuestion(rest, last, part, url, question, options)


def without_video(q: ChatQuestion) -> ChatQuestion:
    """`q` with no reference left to its video URL (a data URL is the whole video, in base64): its video part a
    placeholder (`VIDEO_READ`) and `video_url` empty. What the video-LLM is sent (`forwarded`) is the same: the part
    at `q.part` is replaced by the frames, whatever it holds. The caller's request is not modified."""
    return replace(q, body=_with_parts(q, [VIDEO_READ]), video_url="")


def _with_parts(q: ChatQuestion, parts: list[Any], model: str | None = None) -> dict[str, Any]:
    """`q.body` with its video part replaced by `parts` (and `model` in place of the request's when given): a copy
    down to the one content list it changes; the caller's body is not modified."""
    body = dict(q.body)
    messages = list(body["messages"])
    message = dict(messages[q.message])
    content = list(message["content"])
    content[q.part:q.part + 1] = parts
    message["content"] = content
    messages[q.message] = message
    body["messages"] = messages
    if model is not None:
        body["model"] = model
    return body


# ---- the video ---------------------------------------------------------------------------------------------------
def names_a_file(url: str) -> bool:
    """Whether a `video_url` names a file (`file:` or an absolute path): the one kind `video_source` needs the
    server's media roots for."""
    return url.startswith("file:") or url.startswith("/")


def video_source(url: str, roots: MediaRoots | None) -> bytes | Path:
    """The video a `video_url` names: the bytes of a `data:video/...;base64,` URL, or the real path of a `file://`
    URL (or absolute path) under one of `roots` (the server's media roots, the rules of VIDEO_URI; needed only when
    the URL `names_a_file`). Nothing is fetched: any other URL is refused (VideoRefusedError)."""
    m = _DATA_URL.match(url)
    if m is not None:
        try:
            data = _b64decode(url, m.end())
        except (binascii.Error, ValueError) as e:
            raise VideoRefusedError(f"video_url: the base64 of the {m.group(1)} data URL is malformed ({e})") from None
        if not data:
            raise VideoRefusedError("video_url: the data URL holds no bytes")
        return data
    if url.startswith("data:"):
        raise VideoRefusedError(f"video_url {shown(url)}: a data URL must be data:video/<type>;base64,<bytes>")
    if not names_a_file(url):
        raise VideoRefusedError(f"video_url {shown(url)}: only data:video/...;base64 URLs and file:// paths under "
                                "the server's media roots are read (nothing is fetched from the network)")
    assert roots is not None, "a file URL is resolved under the server's media roots"
    try:
        return roots.resolve(url, "video_url")
    except PathRefusedError as e:
        raise VideoRefusedError(f"{e} ({type(e).__name__})") from None


def _b64decode(text: str, start: int) -> bytes:
    """The bytes of the base64 in `text` from `start` on, checked as `base64.b64decode(validate=True)` checks it
    (padding at the end only; stricter in one case no encoder writes: padding alone after whole groups that end a
    slice is refused), decoded B64_SLICE characters at a time: in a worker thread, the event loop runs
    between the slices."""
    pieces = []
    for at in range(start, len(text), B64_SLICE):
        piece = text[at:at + B64_SLICE]
        if at + B64_SLICE < len(text) and piece.endswith("="):
            raise binascii.Error("padding before the end of the data")
        pieces.append(base64.b64decode(piece, validate=True))
    return b"".join(pieces)


def open_video(path: Path, max_bytes: int) -> tuple[int, int]:
    """(descriptor, size) of a video `video_source` resolved under the media roots (its real path), opened with
    their checks (a regular file, the one checked), at most `max_bytes` (VideoRefusedError otherwise). The caller
    reads it with `read_opened`, which closes it."""
    try:
        fd = open_resolved(path, MediaRoots.label(str(path)))
    except PathRefusedError as e:
        raise VideoRefusedError(f"{e} ({type(e).__name__})") from None
    size = os.fstat(fd).st_size
    if size > max_bytes:
        os.close(fd)
        raise VideoRefusedError(f"video_url {shown(str(path))} is {size} bytes, over this server's bound of "
                                f"{max_bytes} bytes for a video it reads for an answer")
    return fd, size


def read_opened(fd: int, size: int) -> bytes:
    """The `size` bytes of a video `open_video` opened (VideoRefusedError if it grew meanwhile); closes it."""
    with os.fdopen(fd, "rb") as f:
        data = f.read(size + 1)
    if len(data) > size:
        raise VideoRefusedError(f"video_url grew past {size} bytes while it was read")
    return data


# ---- the selection and what is forwarded --------------------------------------------------------------------------
@dataclass(frozen=True)
class Selection:
    """The frames VideoITG chose for the question, chronological, with the JPEG of each."""

    frames: list[int]  # original frame numbers
    timestamps: list[float]  # seconds
    scores: list[float]  # sigmoid relevance
    moments: list[list[float]]  # [start_s, end_s, score], best first
    jpegs: list[bytes]
    # seconds the selection took: reading the request's video (its base64, or the file), the grounding request, the
    # frames' decode and encoding
    select_s: float

    def field(self) -> dict[str, Any]:
        """The `videoitg` field added to an answer."""
        return {"frames": self.frames, "timestamps": [round(t, 3) for t in self.timestamps],
                "scores": [round(s, 6) for s in self.scores],
                "moments": [[round(x, 3) for x in m] for m in self.moments], "select_s": round(self.select_s, 4)}


def selection_of(result: Any, top_k_frames: Sequence[int], jpegs: Sequence[bytes], moments: Sequence[Sequence[float]],
                 select_s: float) -> Selection:
    """A Selection from a grounding result (`GroundingResult`), its top-K frame numbers (chronological), their
    JPEGs in that order and the moments."""
    pos = {n: i for i, n in enumerate(result.frame_indices)}
    scores = result.scores
    if len(jpegs) != len(top_k_frames):
        raise SelectionError(f"the server answered {len(jpegs)} frames for {len(top_k_frames)} chosen", 502)
    return Selection([int(n) for n in top_k_frames], [result.timestamps[pos[n]] for n in top_k_frames],
                     [scores[pos[n]] for n in top_k_frames], [[float(x) for x in m] for m in moments], list(jpegs),
                     select_s)


def forwarded(q: ChatQuestion, selection: Selection, model: str | None = None) -> dict[str, Any]:
    """The request the video-LLM gets: `q.body` with its video part (or `VIDEO_READ`) replaced by the chosen frames
    (`frame_parts`: a timestamp text part, then the JPEG, for each, chronologically), and `model` in place of the
    request's when given. Nothing else changes; the caller's body is not modified."""
    return _with_parts(q, frame_parts(zip(selection.frames, selection.timestamps, selection.jpegs, strict=True)),
                       model)


def forwarded_bytes(q: ChatQuestion, selection: Selection, model: str | None = None) -> bytes:
    """`forwarded(...)` as the JSON bytes sent on: the frames' parts (`frame_parts_json`) spliced in where a
    placeholder part stands, so the images never go through a JSON encoder."""
    if not selection.frames:
        return json.dumps(forwarded(q, selection, model)).encode()
    placeholder = {"type": f"videoitg-frames-{secrets.token_hex(16)}"}  # no client text can be it
    body = _with_parts(q, [placeholder], model)
    head, mark, tail = json.dumps(body, separators=(",", ":")).encode().partition(
        json.dumps(placeholder, separators=(",", ":")).encode())
    assert mark, "the placeholder part is in the request"
    return head + frame_parts_json(zip(selection.frames, selection.timestamps, selection.jpegs, strict=True)) + tail


def with_selection(answer: dict[str, Any], selection: Selection) -> dict[str, Any]:
    """A non-streamed answer with the `videoitg` field added (a copy; the upstream's fields untouched)."""
    out = copy.copy(answer)
    out[EXTENSION] = selection.field()
    return out


# ---- server-sent events ------------------------------------------------------------------------------------------
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def split_event(buf: bytes) -> tuple[bytes, bytes] | None:
    """(the first whole event of a server-sent-events stream with its blank line, the rest), or None while `buf`
    holds no whole event."""
    m = _EVENT_END.search(buf)
    return None if m is None else (buf[:m.end()], buf[m.end():])


def event_data(event: bytes) -> bytes | None:
    """The `data` of one event (its data lines joined by newlines), None when it has none (a comment, a retry)."""
    lines = [line for line in re.split(rb"\r\n|\n|\r", event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def first_event(event: bytes, selection: Selection) -> bytes | None:
    """The first data event of a streamed answer with the `videoitg` field added to its JSON object; None when the
    event holds no JSON object (then an event of its own goes first: `selection_event`)."""
    data = event_data(event)
    if data is None:
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    if not isinstance(chunk, dict):
        return None
    return b"data: " + json.dumps(with_selection(chunk, selection), separators=(",", ":")).encode() + b"\n\n"


def selection_event(selection: Selection) -> bytes:
    """An event holding only the selection: a chunk with no choices, what goes first when the upstream's first
    event holds no JSON object."""
    chunk = {"object": "chat.completion.chunk", "choices": [], EXTENSION: selection.field()}
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
