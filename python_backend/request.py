"""The top-level model's request checks: a request's inputs (name -> array, as Triton holds them) -> a `Request`,
before its video is hashed or sent on."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from videoitg.contract.protocol import INSTRUCTION, OPTION_INPUTS, VIDEO, VIDEO_DIGEST, VIDEO_URI
from videoitg.decode.container import check_source
from videoitg.decode.errors import VideoTooLargeError
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.outputs import SelectionOptions
from videoitg.paths import MediaRoots
from videoitg.request.limits import Limits
from videoitg.request.options import OPTIONS, RequestOptions

Inputs = Mapping[str, np.ndarray]  # a request's inputs by name; an optional input is absent
MAX_OPTION_BYTES = 64  # a text option (RANKING_RULE, FRAMES)
NO_MEDIA_ROOTS = MediaRoots()  # the default: videos by reference are refused
DEFAULT_SELECTION = SelectionOptions()
RAISE_VIDEO_BYTES = ("raise it with --max-video-bytes when the repository is built (env VIDEOITG_MAX_VIDEO_BYTES), "
                     "or name a long video by reference (VIDEO_URI, under a --media-root: docs/limits.md)")
_DIGEST = re.compile(r"b3:[0-9a-f]{64}")  # what `videoitg.digest.video_digest` gives (matched whole)


@dataclass
class Request:
    video: bytes | None  # None: named by `digest` or `reference`
    instruction: str
    options: RequestOptions  # with the deployment's defaults where the request names none
    digest: str | None = None  # sent instead of the bytes: the client's `videoitg.digest.video_digest` of the video
    reference: str | None = None  # VIDEO_URI: the real path of a file under a media root (`read_reference`)

    def video_digest(self) -> str:
        """The digest the feature cache is keyed by: the server's own hash of the bytes when they came (of a
        reference's content: `read_reference`)."""
        if self.video is not None:
            return video_digest(self.video)
        assert self.digest is not None
        return self.digest


def one_value(arr: np.ndarray | None, name: str) -> Any:
    """The single value of an optional request input; None when it is absent."""
    if arr is None:
        return None
    if arr.size != 1:
        raise InputError(f"{name} must hold exactly one value per request (got shape {list(arr.shape)}); "
                         "send one video per request")
    return arr.reshape(-1)[0]


def bytes_value(arr: np.ndarray, name: str) -> bytes:
    """The single value of a BYTES input, which must be bytes."""
    one = one_value(arr, name)
    if not isinstance(one, (bytes, np.bytes_)):
        raise InputError(f"{name} must hold bytes")
    return bytes(one)


def option_text(arr: np.ndarray | None, name: str, choices: Sequence[str]) -> str | None:
    """A text option (RANKING_RULE, FRAMES) as text; None when absent. Its size is checked before any use, so an
    error never echoes a long field back; which of `choices` it names is `RequestOptions`' check."""
    value = one_value(arr, name)
    if value is None:
        return None
    if len(value) > MAX_OPTION_BYTES:
        raise InputError(f"{name} is {len(value)} bytes; at most {MAX_OPTION_BYTES} (one of {', '.join(choices)})")
    return bytes(value).decode("utf-8", errors="replace") if isinstance(value, (bytes, np.bytes_)) else str(value)


def parse_request(inputs: Inputs, selection: SelectionOptions = DEFAULT_SELECTION, limits: Limits | None = None,
                  media_roots: MediaRoots = NO_MEDIA_ROOTS) -> Request:
    """Validate the top-level inputs (Triton itself already rejected wrong dtypes and missing required inputs).
    The byte bounds and the instruction's text are checked here, before the video is hashed or sent on; the token
    bound needs the tokenizer and the video's frame count, so the grounding step checks it
    (`videoitg.request.text.instruction_ids`). The video comes as exactly one of VIDEO (its bytes), VIDEO_DIGEST
    (a digest alone, for a video the server may have cached) or VIDEO_URI (a file under one of `media_roots`,
    resolved here; `read_reference` opens and hashes it): bytes are always hashed by the server itself. TOP_K and
    RANKING_RULE default to `selection`'s."""
    lim = limits or Limits()
    v, d, u = (one_value(inputs.get(name), name) for name in (VIDEO, VIDEO_DIGEST, VIDEO_URI))
    if sum(x is not None for x in (v, d, u)) > 1:
        raise InputError("send one of VIDEO, VIDEO_DIGEST or VIDEO_URI")
    if v is None and d is None and u is None:
        raise InputError("VIDEO is missing (or VIDEO_DIGEST, for a video this server has, or VIDEO_URI)")
    video = digest = reference = None
    if u is not None:
        reference = str(media_roots.resolve(bytes(u) if isinstance(u, (bytes, np.bytes_)) else str(u)))
    elif d is not None:
        digest = bytes(d).decode("ascii", errors="replace") if isinstance(d, (bytes, np.bytes_)) else str(d)
        if not _DIGEST.fullmatch(digest):
            raise InputError("VIDEO_DIGEST must be the video's BLAKE3 digest as videoitg.digest.video_digest "
                             "writes it: 'b3:' and 64 lower-case hex digits")
    else:
        video = _video_bytes(v, lim)
    text = _instruction(inputs.get(INSTRUCTION), lim)
    return Request(video, text, parse_options(inputs).with_defaults(selection), digest, reference)


def _video_bytes(value: Any, limits: Limits) -> bytes:
    if not isinstance(value, (bytes, np.bytes_)):
        raise InputError("VIDEO must hold the encoded video file's bytes")
    try:
        check_source(bytes(value), limits.decode)  # empty, over max_video_bytes: the decoder's own check
    except VideoTooLargeError as e:
        raise VideoTooLargeError(f"VIDEO: {e}; {RAISE_VIDEO_BYTES}") from None
    except InputError as e:
        raise type(e)(f"VIDEO: {e}") from None
    return bytes(value)


def _instruction(instruction: np.ndarray | None, limits: Limits) -> str:
    text = one_value(instruction, INSTRUCTION)
    if text is None:
        raise InputError("INSTRUCTION is missing")
    try:
        return limits.instruction_text(bytes(text) if isinstance(text, np.bytes_) else text)
    except InputError as e:
        raise type(e)(f"INSTRUCTION: {e}") from None


def parse_options(inputs: Inputs) -> RequestOptions:
    """The request's optional option inputs (one per option row: `protocol.OPTION_INPUTS`), each error naming its
    input; None where absent. A text option's size is checked before anything else reads it."""
    values: dict[str, Any] = {}
    for option, name in OPTION_INPUTS.items():
        value = one_value(inputs.get(name), name)
        if isinstance(value, (bytes, np.bytes_)):
            value = option_text(inputs.get(name), name, OPTIONS[option].choices)
        elif isinstance(value, (np.integer, np.floating)):
            value = value.item()
        values[option] = value
    return RequestOptions.labelled(values, OPTION_INPUTS)
