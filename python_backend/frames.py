"""The picked frames as images, for a request that asks (FRAMES, FRAME_SIZE): checked, decoded and answered in the
served format. No Triton here."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from videoitg.contract.tensors import frame_outputs
from videoitg.decode.export import FramesTooLargeError, picked_images
from videoitg.decode.heap import trim_freed_memory
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.paths import MediaRoots
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions, select

from .references import FileVideo, pinned_reference
from .request import NO_MEDIA_ROOTS


def check_frames(options: RequestOptions, video_sent: bool) -> None:
    """Frames (FRAMES) are decoded from the request's video: `video_sent`, the request holds its bytes or names its
    file (frames cannot be decoded from a VIDEO_DIGEST alone)."""
    if options.frames is not None and not video_sent:
        raise InputError("FRAMES: the frames are decoded from the request's video: send VIDEO (its bytes) or "
                         "VIDEO_URI (its file), not VIDEO_DIGEST alone")


def served_frames(video: bytes | FileVideo, result: GroundingResult, options: RequestOptions, limits: Limits,
                  roots: MediaRoots = NO_MEDIA_ROOTS) -> dict[str, np.ndarray]:
    """The outputs holding the frames the options pick (`select`) in `options.frames`' format (at
    `options.frame_size`; 0 or None: the video's own size), chronological, decoded from `video` under the
    deployment's decode limits: its bytes, or the file a reference named under `roots` (the very file
    `read_reference` hashed, under the bounds of a reference: `pinned_reference`). Their bytes are bounded by its
    max_video_bytes: an answer never holds more than the largest upload it accepts (FramesTooLargeError, raised as
    soon as the frames decoded so far pass it)."""
    try:
        if isinstance(video, FileVideo):
            with pinned_reference(roots, video) as path:
                return _frames(path, result, options, limits, limits.reference_decode())
        return _frames(video, result, options, limits, limits.decode)
    finally:
        trim_freed_memory()  # what the decode freed goes back to the system (`videoitg.decode.heap`)


def _frames(video: bytes | Path, result: GroundingResult, options: RequestOptions, limits: Limits,
            decode: DecodeLimits) -> dict[str, np.ndarray]:
    bound = limits.decode.max_bytes
    try:
        images = picked_images(video, result, select(result, options), options.frame_size or None,
                              jpeg=options.frames == "jpeg", max_bytes=bound, limits=decode,
                              time_budget_s=limits.decode_time_budget_s)
    except FramesTooLargeError as e:
        raise FramesTooLargeError(f"FRAMES: {e} (max_video_bytes, the bound of an answer's frames); ask for fewer "
                                  "(TOP_K, MIN_SCORE, COVERAGE), smaller (FRAME_SIZE) or jpeg frames") from None
    return frame_outputs([image for _, image in images], options.frames)
