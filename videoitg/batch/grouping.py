"""Work units: rows grouped by video so a video is decoded and encoded once for all its instructions.

The vision half of the model (decode, SigLIP, projector) does not depend on the instruction, so a
unit of work is one video with up to `max_group_rows` of its instructions. Very popular videos are
split into several units so one video cannot become a straggler that holds back the whole run;
each extra unit costs one extra decode + encode of that video.
"""

from __future__ import annotations

from videoitg.batch.manifest import Row


def make_units(rows: list[Row], group: bool = True, max_group_rows: int = 64) -> list[list[Row]]:
    """Units of work in manifest order of each video's first row. `group=False`: one row per unit."""
    if not group:
        return [[r] for r in rows]
    if max_group_rows < 1:
        raise ValueError("max_group_rows must be >= 1")
    by_video: dict[str, list[Row]] = {}
    for r in rows:
        by_video.setdefault(r.video, []).append(r)
    units: list[list[Row]] = []
    for video_rows in by_video.values():
        for i in range(0, len(video_rows), max_group_rows):
            units.append(video_rows[i:i + max_group_rows])
    return units
