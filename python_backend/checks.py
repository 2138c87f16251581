"""The step models' input checks. Every step is reachable by a client as well as by the top-level model, so each
checks its own inputs as the top-level model checks a request: a bad tensor is that request's INVALID_ARGUMENT,
never a batch-mate's error."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch

from videoitg.errors import InputError
from videoitg.moments import known_duration
from videoitg.request.limits import Limits

Batch = TypeVar("Batch", np.ndarray, torch.Tensor)


def one_video(batch: Batch | None, name: str) -> Batch:
    """A step input's one video: a request holds one video, on a batch axis of 1."""
    if batch is None:
        raise InputError(f"{name} is missing")
    if batch.shape[0] != 1:
        raise InputError(f"{name} must hold one video a request (batch axis 1), got {batch.shape[0]}")
    return batch[0]


def check_frames(frames: torch.Tensor, image_size: int, limits: Limits, num_frames: int | None = None) -> None:
    """`videoitg_vision`'s PIXEL_VALUES: [T, 3, S, S], 1 <= T <= max_sampled_frames; with NUM_FRAMES (the frames
    are one chunk of a video of `num_frames`), T <= num_frames <= max_sampled_frames."""
    if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[2] != image_size or frames.shape[3] != image_size:
        raise InputError(f"PIXEL_VALUES must be [T, 3, {image_size}, {image_size}], got {list(frames.shape)}")
    if not 1 <= frames.shape[0] <= limits.max_sampled_frames:
        raise InputError(f"PIXEL_VALUES holds {frames.shape[0]} frames; 1 to {limits.max_sampled_frames} "
                         "(max_sampled_frames) are allowed")
    if num_frames is not None and not frames.shape[0] <= num_frames <= limits.max_sampled_frames:
        raise InputError(f"NUM_FRAMES is {num_frames}: the video of a {frames.shape[0]}-frame chunk has "
                         f"{frames.shape[0]} to {limits.max_sampled_frames} (max_sampled_frames) frames")


def frame_count(value: np.ndarray | None) -> int | None:
    """NUM_FRAMES, an optional [1, 1] integer input: None when absent."""
    if value is None:
        return None
    if value.size != 1 or value.dtype.kind not in "iu":
        raise InputError(f"NUM_FRAMES must hold one integer, got {value.size} values of {value.dtype}")
    return int(value.reshape(-1)[0])


def check_features(visual: torch.Tensor, config: Any, limits: Limits) -> None:
    """`videoitg_grounding`'s FEATURES of one video: [T, HW², hidden] with the HW the model uses for T frames,
    1 <= T <= max_sampled_frames, finite."""
    if visual.dim() != 3:
        raise InputError(f"FEATURES must be [T, tokens per frame, hidden] for one video, got {list(visual.shape)}")
    t, n, h = visual.shape
    if not 1 <= t <= limits.max_sampled_frames:
        raise InputError(f"FEATURES holds {t} frames; 1 to {limits.max_sampled_frames} (max_sampled_frames) "
                         "are allowed")
    want = (config.tokens_per_side(t) ** 2, config.text.hidden_size)
    if (n, h) != want:
        raise InputError(f"FEATURES of {t} frames must be [{t}, {want[0]}, {want[1]}] for this model, got "
                         f"{list(visual.shape)}")
    if not bool(torch.isfinite(visual).all()):
        raise InputError("FEATURES holds NaN or infinite values")


def check_selection_inputs(logits: np.ndarray, frame_indices: np.ndarray, timestamps: np.ndarray,
                           limits: Limits) -> None:
    """`videoitg_select`'s per-frame inputs of one video: as many logits as frames (1..max_sampled_frames), finite
    logits and timestamps, frame numbers rising."""
    t = logits.size
    if not 1 <= t <= limits.max_sampled_frames:
        raise InputError(f"LOGITS holds {t} frames; 1 to {limits.max_sampled_frames} (max_sampled_frames) are "
                         "allowed")
    if frame_indices.size != t or timestamps.size != t:
        raise InputError(f"LOGITS, FRAME_INDICES and TIMESTAMPS must hold one value per frame, got {t}, "
                         f"{frame_indices.size} and {timestamps.size}")
    if not (np.isfinite(logits).all() and np.isfinite(timestamps).all()):
        raise InputError("LOGITS and TIMESTAMPS must be finite")
    if (frame_indices < 0).any() or (np.diff(frame_indices) <= 0).any():
        raise InputError("FRAME_INDICES must be frame numbers >= 0 in rising order")


def duration_input(value: np.ndarray | None) -> float | None:
    """DURATION, an optional [1, 1] input of `videoitg_select` (the decode step's output): the video's duration in
    seconds, 0 when the container did not say. None when absent or 0; InputError unless one finite number >= 0."""
    if value is None:
        return None
    if value.size != 1 or value.dtype.kind != "f":
        raise InputError(f"DURATION must hold one number, got {value.size} values of {value.dtype}")
    d = float(value.reshape(-1)[0])
    if not (np.isfinite(d) and d >= 0):
        raise InputError(f"DURATION must be a finite number of seconds >= 0, got {d!r}")
    return known_duration(d)
