"""The top-K frames as images, for a request that asks (FRAMES, FRAMES_SIZE): checked, decoded and answered in the
served format. No Triton here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videoitg.contract.protocol import FRAME_FORMATS, FRAMES, FRAMES_SIZE, MAX_FRAMES_SIZE
from videoitg.contract.tensors import frame_outputs
from videoitg.decode.export import FramesTooLargeError, top_k_images
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.paths import MediaRoots
from videoitg.request.limits import Limits

from .references import FileVideo, pinned_reference
from .request import NO_MEDIA_ROOTS, one_value, option_text


@dataclass(frozen=True)
class FrameRequest:
    format: str  # a key of FRAME_FORMATS: "jpeg" | "uint8"
    size: int | None  # longer side in pixels; None: the video's own size


def parse_frames(frames: np.ndarray | None, size: np.ndarray | None, video_sent: bool) -> FrameRequest | None:
    """The optional FRAMES ("jpeg" | "uint8") and FRAMES_SIZE (0: the video's own size, else 1..MAX_FRAMES_SIZE)
    inputs; None when FRAMES is absent. `video_sent`: the request holds the video's bytes or names its file
    (frames cannot be decoded from a VIDEO_DIGEST alone)."""
    fmt, n = option_text(frames, FRAMES, list(FRAME_FORMATS)), one_value(size, FRAMES_SIZE)
    if fmt is None:
        if n is not None:
            raise InputError("FRAMES_SIZE sizes the frames FRAMES asks for: send FRAMES too")
        return None
    if fmt not in FRAME_FORMATS:
        raise InputError(f"FRAMES must be one of {', '.join(FRAME_FORMATS)}, got {fmt!r}")
    n = 0 if n is None else int(n)
    if not 0 <= n <= MAX_FRAMES_SIZE:
        raise InputError(f"FRAMES_SIZE must be 0 (the video's own size) or 1 to {MAX_FRAMES_SIZE} pixels (the "
                         f"longer side), got {n}")
    if not video_sent:
        raise InputError("FRAMES: the frames are decoded from the request's video: send VIDEO (its bytes) or "
                         "VIDEO_URI (its file), not VIDEO_DIGEST alone")
    return FrameRequest(fmt, n or None)


def served_frames(video: bytes | FileVideo, result: GroundingResult, top_k: int, frames: FrameRequest,
                  limits: Limits, roots: MediaRoots = NO_MEDIA_ROOTS) -> dict[str, np.ndarray]:
    """The outputs holding the result's top-K frames, chronological, decoded from `video` under the deployment's
    decode limits: its bytes, or the file a reference named under `roots` (the very file `read_reference` hashed,
    under the bounds of a reference: `pinned_reference`). Their bytes are bounded by its max_video_bytes: an answer
    never holds more than the largest upload it accepts (FramesTooLargeError, raised as soon as the frames decoded
    so far pass it)."""
    if isinstance(video, FileVideo):
        with pinned_reference(roots, video) as path:
            return _frames(path, result, top_k, frames, limits, limits.reference_decode())
    return _frames(video, result, top_k, frames, limits, limits.decode)


def _frames(video: bytes | Path, result: GroundingResult, top_k: int, frames: FrameRequest, limits: Limits,
            decode: DecodeLimits) -> dict[str, np.ndarray]:
    bound = limits.decode.max_bytes
    try:
        images = top_k_images(video, result, top_k, frames.size, jpeg=frames.format == "jpeg", max_bytes=bound,
                              limits=decode, time_budget_s=limits.decode_time_budget_s)
    except FramesTooLargeError as e:
        raise FramesTooLargeError(f"FRAMES: {e} (max_video_bytes, the bound of an answer's frames); ask for fewer "
                                  "(TOP_K), smaller (FRAMES_SIZE) or jpeg frames") from None
    return frame_outputs([image for _, image in images], frames.format)
