"""The instruction-independent half of a request, without torch: what the feature caches keep."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class VideoFeatures:
    """A video's visual features and the frames they are of. `visual` [T, hw², H]: a torch tensor in process and on
    a GPU; a numpy array where a server's top-level model keeps host features (`videoitg.python_backend.steps`)."""

    visual: Any
    frame_indices: list[int]
    timestamps: list[float]
    duration: float | None = None  # seconds, from the container (None where it was not read)
