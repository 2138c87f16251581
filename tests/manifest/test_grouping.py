"""`videoitg.manifest.grouping`: rows grouped by video keep their first appearance and their order."""

from __future__ import annotations

from dataclasses import dataclass

from videoitg.manifest.grouping import group_by_video, make_units
from videoitg.manifest.rows import Row


@dataclass
class _Item:
    video: str
    n: int


def test_group_by_video_keeps_first_appearance_and_row_order() -> None:
    items = [_Item("b", 0), _Item("a", 1), _Item("b", 2), _Item("c", 3), _Item("a", 4)]
    assert {v: [i.n for i in g] for v, g in group_by_video(items).items()} == {"b": [0, 2], "a": [1, 4], "c": [3]}
    assert list(group_by_video(items)) == ["b", "a", "c"]
    rows = [Row(str(i.n), i.n, i.video, "q") for i in items]
    assert [[r.row_id for r in u] for u in make_units(rows, max_group_rows=1)] == [["0"], ["2"], ["1"], ["4"], ["3"]]
