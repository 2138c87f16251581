"""The top-K frames as images, for a request that asks (FRAMES, FRAMES_SIZE): checked, decoded and answered in the
served format. No Triton here."""

from __future__ import annotations

import numpy as np

from videoitg.contract.tensors import frame_outputs
from videoitg.decode.export import FramesTooLargeError, top_k_images
from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.request.limits import Limits
from videoitg.request.options import RequestOptions


def check_frames(options: RequestOptions, video_sent: bool) -> None:
    """Frames (FRAMES) are decoded from the request's video: `video_sent`, the request holds its bytes (frames
    cannot be decoded from a VIDEO_DIGEST alone)."""
    if options.frames is not None and not video_sent:
        raise InputError("FRAMES: the frames are decoded from the request's video: send VIDEO (its bytes), not "
                         "VIDEO_DIGEST or VIDEO_URI alone")


def served_frames(video: bytes, result: GroundingResult, options: RequestOptions, limits: Limits
                  ) -> dict[str, np.ndarray]:
    """The outputs holding the result's top-K frames in `options.frames`' format (at `options.frame_size`; 0 or
    None: the video's own size), chronological, decoded from `video` under the deployment's decode limits. Their
    bytes are bounded by its max_video_bytes: an answer never holds more than the largest upload it accepts
    (FramesTooLargeError, raised as soon as the frames decoded so far pass it)."""
    bound = limits.decode.max_bytes
    try:
        images = top_k_images(video, result, options.top_k, options.frame_size or None,
                              jpeg=options.frames == "jpeg", max_bytes=bound, limits=limits.decode,
                              time_budget_s=limits.decode_time_budget_s)
    except FramesTooLargeError as e:
        raise FramesTooLargeError(f"FRAMES: {e} (max_video_bytes, the bound of an answer's frames); ask for fewer "
                                  "(TOP_K), smaller (FRAMES_SIZE) or jpeg frames") from None
    return frame_outputs([image for _, image in images], options.frames)
