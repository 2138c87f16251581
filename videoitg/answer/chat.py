"""Select, then answer: an OpenAI chat-completions request whose last user message holds one video, answered by a
video-LLM from the frames VideoITG picks for the question. The policy, pure and without a server (docs/answer.md):
the one bounded reading of JSON from other hands (`load_json`: a client's body, everything the video-LLM sends),
read and check the request (`load_body`, `parse_chat`), name its video (`video_source`: a data URL sized from its
length before it is decoded, or a file), let go of it once read (`without_video`), build what the video-LLM is sent
(`forwarded`: the video part replaced by the chosen frames, everything else as it came), the `videoitg` field of the
answer (`Selection.field`), a streamed answer checked event by event with the selection in its first
(`EventRelay`), and each error in the OpenAI shape (`AnswerError.body`).

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
from typing import Any, Protocol

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
# Bytes in memory per byte of a JSON text while it is parsed (`load_json`): its bytes and its text, then the text
# and the value, which takes up to a quarter more where its strings hold escapes (Python's writer over-allocates as
# it unescapes): 2.0 for a data-URL body given in one buffer, 2.2 where its '/' are escaped (benchmarks/
# answer_memory.py, RESULTS.md). Given in many small chunks, the chunks freed as their text is made leave holes in
# the heap that stay resident until it is trimmed: the endpoint gathers a body in one buffer.
PARSE_HOLD = 2.25
VIDEO_READ = {"type": f"{EXTENSION}-video-read"}  # the video part once its video is read (`without_video`)
_DATA_URL = re.compile(r"data:(video/[A-Za-z0-9.+-]{1,64});base64,", re.ASCII)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


class Budget(Protocol):
    """Where held bytes are counted (the front's `ByteBudget`, safe to use from worker threads): `take` says whether
    there is room."""

    def take(self, n: int) -> bool: ...

    def give(self, n: int) -> None: ...


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


class _Unbounded(ValueError):
    """A JSON value past a bound of `load_json` (raised from its parse hooks)."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: not a literal NaN or Infinity, yet a float that is one
        raise _Unbounded(f"holds a number out of range ({text[:40]})")
    return value


def _bounded_int(digits: str) -> int:
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise _Unbounded(f"holds an integer of more than {MAX_INT_DIGITS} digits")
    return int(digits)


def load_json(body: bytes | list[bytes] | list[bytearray], what: str, error: type[AnswerError],
              budget: Budget | None = None) -> Any:
    """JSON from other hands, the one bounded reading of a client's body and of everything the video-LLM sends
    (its answer, error text, model list, each event of a stream): from its bytes or the chunks it came in (a list,
    emptied as it is read), at most MAX_JSON_ITEMS objects, lists and commas, UTF-8, no NaN or Infinity (nor a
    number that overflows to one), integers of at most MAX_INT_DIGITS digits, nesting at most MAX_JSON_DEPTH
    levels; else `error` naming `what` and what is wrong. The chunks are counted and decoded one at a time, so that
    in a worker thread the event loop runs between them; joining their text and the one JSON parse of it hold the
    GIL throughout (the loop waits about 45 ms for a 53 MiB body: `python -m benchmarks.answer_parse`).
    `budget` (the caller counts the bytes given, which go as their text is made): the parse's copies beyond them,
    PARSE_HOLD times the text's size in memory less those bytes, are held in it while they exist (OverloadedError
    when there is no room). A text is wider than its UTF-8 where it holds a character past U+00FF (2 or 4 bytes
    each, for all of its characters)."""
    chunks = [body] if isinstance(body, bytes) else body
    given = sum(map(len, chunks))
    try:
        texts = _decoded(chunks, what, error)
    finally:
        chunks.clear()
    extra = max(0, int(PARSE_HOLD * _text_bytes(texts)) - given) if budget is not None else 0
    if budget is not None and not budget.take(extra):
        raise OverloadedError(f"the server holds too many bytes now to read {what}: retry shortly")
    try:
        text = texts[0] if len(texts) == 1 else "".join(texts)
        texts.clear()
        try:
            value = json.loads(text, parse_constant=no_constant, parse_float=_finite, parse_int=_bounded_int)
        except RecursionError:
            raise error(f"{what} nests more than {MAX_JSON_DEPTH} levels") from None
        except _Unbounded as e:
            raise error(f"{what} {e}") from None
        except ValueError as e:
            raise error(f"{what} is not valid JSON ({str(e)[:120]})") from None
        finally:
            text = ""
    finally:
        if budget is not None:
            budget.give(extra)
    if nesting_over(value, MAX_JSON_DEPTH):
        raise error(f"{what} nests more than {MAX_JSON_DEPTH} levels")
    return value


def _text_bytes(texts: list[str]) -> int:
    """What the one text joined from `texts` takes in memory: 1, 2 or 4 bytes a character, by the widest (text past
    U+00FF counted as 2 bytes a character, past U+FFFF as 4)."""
    width = 1
    for t in texts:
        if not t.isascii():
            width = max(width, 4 if _ASTRAL.search(t) else 2)
    return width * sum(map(len, texts))


def load_body(body: bytes | list[bytes] | list[bytearray], budget: Budget | None = None) -> Any:
    """A client's request body read by `load_json` (ChatRequestError; the copies its parse makes held in
    `budget`), text that cannot be encoded refused naming its field (a lone surrogate, `"\\ud800"`: valid JSON,
    not Unicode text)."""
    value = load_json(body, "request body", ChatRequestError, budget)
    if (where := unencodable(value)) is not None:
        raise ChatRequestError(f"request body: {where} holds text that cannot be encoded as UTF-8 (a lone "
                               "surrogate, \\ud800-\\udfff unpaired)")
    return value


def unencodable(value: Any) -> str | None:
    """Where in a parsed JSON value the first text that cannot be encoded as UTF-8 is (a string or a key, named
    as `messages[1].content[0].text`); None when all of it can. No recursion; paths are built only once such text
    is known to be there."""
    if not _walk(value, False):
        return None
    return _walk(value, True) or "the body"


def _walk(value: Any, named: bool) -> str | bool:
    """Whether `value` holds text that cannot be encoded (`named`: where, as `unencodable` names it)."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, at = stack.pop()
        if isinstance(v, str):
            if _has_surrogate(v):
                return at if named else True
        elif isinstance(v, dict):
            for k, x in v.items():
                if _has_surrogate(k):
                    return f"a key of {at or 'the body'}" if named else True
                stack.append((x, (f"{at}.{k[:40]}" if at else k[:40]) if named else ""))
        elif isinstance(v, list):
            stack.extend((x, f"{at}[{i}]" if named else "") for i, x in enumerate(v))
    return False


def _has_surrogate(text: str) -> bool:
    if text.isascii():  # O(1): the string's own flag
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _decoded(chunks: list[bytes] | list[bytearray], what: str, error: type[AnswerError]) -> list[str]:
    """The text of a body's chunks (each decoded, then dropped from the list), once its count of '{', '[' and ','
    is known to be within MAX_JSON_ITEMS."""
    items = 0
    for chunk in chunks:
        for at in range(0, len(chunk), COUNT_BYTES):
            end = at + COUNT_BYTES
            items += chunk.count(b"{", at, end) + chunk.count(b"[", at, end) + chunk.count(b",", at, end)
        if items > MAX_JSON_ITEMS:
            raise error(f"{what} holds more than {MAX_JSON_ITEMS} objects, lists and commas (its '{{', '[' and "
                        "',' bytes, in its text too)")
    texts: list[str] = []
    before, pending = 0, b""  # the body's bytes before this chunk; the start of a character the last one cut
    for i, chunk in enumerate(chunks):
        data = pending + chunk if pending else chunk  # one buffer given whole is decoded in place, never copied
        try:
            text, used = codecs.utf_8_decode(data, "strict", i == len(chunks) - 1)
        except UnicodeDecodeError as e:
            raise error(f"{what} is not valid UTF-8 ({e.reason} at byte {before - len(pending) + e.start})") from None
        texts.append(text)
        pending = bytes(data[used:])
        before += len(chunk)
        chunks[i] = b""
        del data, chunk
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
@dataclass(frozen=True)
class DataVideo:
    """A video sent in the request as a `data:video/...;base64,` URL, not decoded yet: the URL, where its base64
    begins, and `size`, the bytes it decodes to, known from its length before anything is decoded."""

    url: str
    start: int
    size: int
    media_type: str

    def decode(self) -> bytearray:
        """The video's bytes, decoded B64_SLICE characters at a time straight into one buffer of `size` bytes (in a
        worker thread, the event loop runs between the slices), checked as `base64.b64decode(validate=True)` checks
        (padding at the end only; stricter in one case no encoder writes: padding alone after whole groups that end
        a slice is refused). VideoRefusedError when the base64 is malformed."""
        out = bytearray(self.size)
        at, text = 0, self.url
        try:
            for start in range(self.start, len(text), B64_SLICE):
                end = start + B64_SLICE
                if end < len(text) and text[end - 1] == "=":
                    raise binascii.Error("padding before the end of the data")
                piece = base64.b64decode(text[start:end], validate=True)
                if at + len(piece) > self.size:
                    raise binascii.Error("more bytes than its length says")
                out[at:at + len(piece)] = piece
                at += len(piece)
            if at != self.size:
                raise binascii.Error("fewer bytes than its length says")
        except (binascii.Error, ValueError) as e:
            raise VideoRefusedError(f"video_url: the base64 of the {self.media_type} data URL is malformed "
                                    f"({e})") from None
        return out


def names_a_file(url: str) -> bool:
    """Whether a `video_url` names a file (`file:` or an absolute path): the one kind `video_source` needs the
    server's media roots for."""
    return url.startswith("file:") or url.startswith("/")


def video_source(url: str, roots: MediaRoots | None, max_bytes: int | None = None) -> DataVideo | Path:
    """The video a `video_url` names: a `data:video/...;base64,` URL (`DataVideo`, not decoded; over `max_bytes`
    once decoded, refused from its length), or the real path of a `file://` URL (or absolute path) under one of
    `roots` (the server's media roots, the rules of VIDEO_URI; needed only when the URL `names_a_file`), which is
    not opened here (`check_file`). Nothing is fetched: any other URL is refused (VideoRefusedError)."""
    m = _DATA_URL.match(url)
    if m is not None:
        chars = len(url) - m.end()
        if chars == 0:
            raise VideoRefusedError("video_url: the data URL holds no bytes")
        if chars % 4:
            raise VideoRefusedError(f"video_url: the base64 of the {m.group(1)} data URL is malformed ({chars} "
                                    "characters, not a multiple of 4)")
        size = chars // 4 * 3 - (url.endswith("==") + url.endswith("="))
        if max_bytes is not None and size > max_bytes:
            raise VideoRefusedError(f"video_url: the {m.group(1)} data URL holds a video of {size} bytes, over this "
                                    f"server's bound of {max_bytes} bytes for a video sent in the request: name a "
                                    "long video by file:// under one of the server's --media-root directories")
        return DataVideo(url, m.end(), size, m.group(1))
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


def check_file(path: Path) -> None:
    """Refuse a video `video_source` resolved under the media roots (its real path) that cannot be opened with
    their checks (missing, not a regular file, a symlink swapped in: VideoRefusedError naming the kind). Opened
    and closed, nothing read: the grounding server reads the file by reference (VIDEO_URI) and checks it again."""
    try:
        os.close(open_resolved(path, MediaRoots.label(str(path))))
    except PathRefusedError as e:
        raise VideoRefusedError(f"{e} ({type(e).__name__})") from None


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
MAX_EVENT_BYTES = 1 << 20  # one event of a streamed answer (a chat chunk holds a token, or a piece of a tool call)
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
DONE = b"[DONE]"  # the data of the event that ends an OpenAI stream


def event_data(event: bytes) -> bytes | None:
    """The `data` of one event (its data lines joined by newlines), None when it has none (a comment, a retry)."""
    lines = [line for line in re.split(rb"\r\n|\n|\r", event) if line.startswith(b"data:")]
    if not lines:
        return None
    return b"\n".join(line[5:].removeprefix(b" ") for line in lines)


def selection_event(selection: Selection) -> bytes:
    """An event holding only the selection: a chunk with no choices, what goes first when the upstream's first
    data event holds no chunk (`[DONE]`), or it sent none."""
    chunk = {"object": "chat.completion.chunk", "choices": [], EXTENSION: selection.field()}
    return b"data: " + strict_json(chunk) + b"\n\n"


def strict_json(value: Any) -> bytes:
    """`value` as compact JSON, no NaN or Infinity (ValueError instead): what the endpoint answers is JSON."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()


class EventRelay:
    """A streamed answer's bytes checked event by event as they arrive (`feed`, then `end`), each event passed on
    as it came once it is whole: a data event holds `[DONE]` or a JSON object read by `load_json` (the bounds of
    a client's body; at most `max_event` bytes), anything else breaks the stream (UpstreamUnavailableError), as
    does a stream that ends inside an event. The first data event holding an object gets the `videoitg` field; an
    event of the selection alone goes first where the first data event is `[DONE]` or none comes. Comments and
    other fields (`retry`, `id`) pass as they came."""

    def __init__(self, selection: Selection, max_event: int = MAX_EVENT_BYTES):
        self.selection, self.max_event = selection, max_event
        self.held = bytearray()  # the bytes of an event not whole yet
        self.scanned = 0  # of `held`, searched for an event's end
        self.first = True  # no data event yet

    def feed(self, chunk: bytes) -> bytes:
        """What to send on for `chunk`: the events it completes (b"" while none)."""
        held = self.held
        held += chunk
        out, at = [], 0
        while (m := _EVENT_END.search(held, max(at, self.scanned - 3))) is not None:
            out.append(self._event(bytes(held[at:m.end()])))
            at = self.scanned = m.end()
        del held[:at]
        self.scanned = len(held)
        if len(held) > self.max_event:
            raise UpstreamUnavailableError(f"the video-LLM's stream sent an event of more than {self.max_event} "
                                           "bytes")
        return b"".join(out)

    def end(self) -> bytes:
        """What to send on once the stream ended: the selection if no data event carried it."""
        if self.held.strip():
            raise UpstreamUnavailableError("the video-LLM's stream broke off inside an event")
        return selection_event(self.selection) if self.first else b""

    def _event(self, event: bytes) -> bytes:
        data = event_data(event)
        if data is None:
            return event
        if data == DONE:
            first, self.first = self.first, False
            return selection_event(self.selection) + event if first else event
        chunk = load_json(data, "an event of the video-LLM's stream", UpstreamUnavailableError)
        if not isinstance(chunk, dict):
            raise UpstreamUnavailableError("an event of the video-LLM's stream holds no JSON object")
        if not self.first:
            return event
        self.first = False
        return b"data: " + strict_json(with_selection(chunk, self.selection)) + b"\n\n"
