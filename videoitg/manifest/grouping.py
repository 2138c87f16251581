"""Work units: a video with up to `max_group_rows` of its instructions, so its vision half (decode, SigLIP,
projector; independent of the instruction) runs once per unit; popular videos split so none becomes a straggler."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, TypeVar

from videoitg.manifest.rows import Row


class _HasVideo(Protocol):
    @property
    def video(self) -> str: ...


T = TypeVar("T", bound=_HasVideo)


def group_by_video(items: Iterable[T]) -> dict[str, list[T]]:
    """Items (batch rows, annotation records) by their `video`, videos in order of first appearance, each video's
    items in their own order."""
    by_video: dict[str, list[T]] = {}
    for item in items:
        by_video.setdefault(item.video, []).append(item)
    return by_video


def make_units(rows: list[Row], group: bool = True, max_group_rows: int = 64) -> list[list[Row]]:
    """Units of work in manifest order of each video's first row. `group=False`: one row per unit."""
    if not group:
        return [[r] for r in rows]
    if max_group_rows < 1:
        raise ValueError("max_group_rows must be >= 1")
    units: list[list[Row]] = []
    for video_rows in group_by_video(rows).values():
        for i in range(0, len(video_rows), max_group_rows):
            units.append(video_rows[i:i + max_group_rows])
    return units
