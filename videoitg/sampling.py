"""Which frames of a video the model sees (the released sampling rule, and the training one).

Two named rules, both returning *original* frame numbers:
- "eval"  (lmms-eval wrapper, what the released scores were produced with): candidates every
  step = round(fps / target_fps) frames; if more than `num_frames`, keep cand[floor(i * n / num_frames)].
- "train" (`get_frame_indices`, training and infer.py): same candidates, but end-aligned
  cand[round((i + 1) * n / num_frames - 1)].
The original crashes when fps < 0.5 * target_fps (step 0) and on empty videos; here step >= 1 and
bad metadata raise a clear error instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from videoitg.errors import InputError

Rule = Literal["eval", "train"]


@dataclass(frozen=True)
class SamplingParams:
    num_frames: int = 512
    target_fps: float = 1.0
    rule: Rule = "eval"

    def __post_init__(self) -> None:
        if isinstance(self.num_frames, bool) or not isinstance(self.num_frames, int):
            raise InputError(f"num_frames must be an int, got {self.num_frames!r}")
        if isinstance(self.target_fps, bool) or not isinstance(self.target_fps, (int, float)):
            raise InputError(f"target_fps must be a number, got {self.target_fps!r}")
        if self.num_frames < 1:
            raise InputError(f"num_frames must be >= 1, got {self.num_frames}")
        if not (self.target_fps > 0 and math.isfinite(self.target_fps)):
            raise InputError(f"target_fps must be a positive number, got {self.target_fps}")
        if self.rule not in ("eval", "train"):
            raise InputError(f"sampling rule must be 'eval' or 'train', got {self.rule!r}")

    def key(self) -> str:
        """Stable identity for caches: same key, same frames."""
        return f"{self.rule}:{self.num_frames}:{self.target_fps:g}"


def sample_frame_indices(total_frames: int, fps: float, params: SamplingParams = SamplingParams()) -> list[int]:
    """Original frame numbers to decode for a video of `total_frames` frames at `fps`."""
    if total_frames is None or total_frames < 1:
        raise InputError(f"video has no frames (frame count {total_frames})")
    if fps is None or not (fps > 0 and math.isfinite(fps)):
        raise InputError(f"video has no usable frame rate (fps {fps})")
    ratio = fps / params.target_fps
    if not math.isfinite(ratio):
        raise InputError(f"frame rate {fps} over target_fps {params.target_fps} is out of range")
    step = max(1, round(ratio))
    cand = range(0, total_frames, step)
    n, k = len(cand), params.num_frames
    if n <= k:
        return list(cand)
    if params.rule == "eval":
        return [cand[int(i * n / k)] for i in range(k)]
    return [cand[round((i + 1) * n / k - 1)] for i in range(k)]


def frame_timestamps(frame_indices: list[int], fps: float) -> list[float]:
    """Seconds from the start of the video for each original frame number."""
    return [i / fps for i in frame_indices]
