"""Select, then answer: an OpenAI chat-completions request whose last user message holds one video, answered by a
video-LLM from the frames VideoITG picks for the question. The policy, pure and without a server (docs/answer.md):
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
import copy
import json
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from videoitg.answer.bounded_json import Budget, load_json, unencodable
from videoitg.answer.errors import ChatRequestError, OptionError, SelectionError, VideoPartError, VideoRefusedError
from videoitg.answer.handoff import frame_parts, frame_parts_json
from videoitg.errors import InputError
from videoitg.paths import MediaRoots, PathRefusedError, open_resolved, shown
from videoitg.request.options import CHAT, RequestOptions

EXTENSION = "videoitg"  # the request's extension object, and the answer's added field
# The chosen frames' longer side unless the request says (`frame_size`; 0: the video's own size). 448 px is a common
# input size of the open video-LLMs; a frame at a video's own size costs a model like Qwen2.5-VL many more tokens.
DEFAULT_FRAME_SIZE = 448
B64_SLICE = 1 << 20  # base64 characters decoded at once (a multiple of 4)
PATHS = ("/v1/chat/completions", "/v1/models")
VIDEO_READ = {"type": f"{EXTENSION}-video-read"}  # the video part once its video is read (`without_video`)
_DATA_URL = re.compile(r"data:(video/[A-Za-z0-9.+-]{1,64});base64,", re.ASCII)




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


def load_body(body: bytes | list[bytes] | list[bytearray], budget: Budget | None = None) -> Any:
    """A client's request body read by `load_json` (ChatRequestError; the copies its parse makes held in
    `budget`), text that cannot be encoded refused naming its field (a lone surrogate, `"\\ud800"`: valid JSON,
    not Unicode text)."""
    value = load_json(body, "request body", ChatRequestError, budget)
    if (where := unencodable(value)) is not None:
        raise ChatRequestError(f"request body: {where} holds text that cannot be encoded as UTF-8 (a lone "
                               "surrogate, \\ud800-\\udfff unpaired)")
    return value


def parse_chat(body: Any) -> ChatQuestion:
    """Check a chat-completions request (parsed JSON) and find its video: exactly one `video_url` part in the whole
    request, in the last user message, beside at least one text part (the question). The `videoitg` extension object
    (the options whose rows allow it there, `videoitg.request.options.CHAT`, bounded as they declare; `top_k`
    default the grounding server's, `frame_size` default DEFAULT_FRAME_SIZE) is read and removed; every other field
    stays as it came."""
    if not isinstance(body, dict):
        raise ChatRequestError("request body must be a JSON object (an OpenAI chat-completions request)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
        raise ChatRequestError("'messages' must be a non-empty list of message objects")
    try:
        options = RequestOptions.from_object(body.get(EXTENSION, {}), CHAT, EXTENSION,
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
    if len(jpegs) != len(top_k_frames):
        raise SelectionError(f"the server answered {len(jpegs)} frames for {len(top_k_frames)} chosen", 502)
    pos = result.positions(top_k_frames)
    return Selection([int(n) for n in top_k_frames], [result.timestamps[p] for p in pos],
                     [result.scores[p] for p in pos], [[float(x) for x in m] for m in moments], list(jpegs),
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
