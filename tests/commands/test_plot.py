"""The timeline picture: every label inside the figure, as many thumbnails as chosen frames (or a caption saying
which are shown), the video's name in the title."""

from __future__ import annotations

import math

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from videoitg.commands.plot import draw_timeline, plot_timeline, score_decimals, thumbnail_positions
from videoitg.outputs import GroundingResult

matplotlib.use("Agg")


def _result(scores: list[float], name: str = "/videos/five_minutes.mp4") -> GroundingResult:
    logits = [math.log(s / (1 - s)) for s in scores]
    return GroundingResult(logits, [2 * i for i in range(len(scores))], [float(i) for i in range(len(scores))],
                           "When is the yellow disc at the top of the picture?", name)


def _five_minutes_best_at_the_end() -> GroundingResult:
    """300 frames at 1 fps, scores in a narrow band (long tick labels: 0.98125), the best moment the last 12 s."""
    t = np.arange(300, dtype=float)
    s = 0.9801 + 0.0006 * np.exp(-((t - 120) / 6) ** 2) + 0.0011 * (t >= 288) + 0.00005 * np.sin(t)
    return _result(s.tolist())


def _texts_outside(fig) -> list[str]:  # a matplotlib Figure
    """Drawn text (titles, axis labels, tick labels of ticks in view, moment labels) not wholly inside the figure."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ticks = set()
    drawn = []
    for ax in fig.axes:
        for axis, (lo, hi) in ((ax.xaxis, sorted(ax.get_xlim())), (ax.yaxis, sorted(ax.get_ylim()))):
            for tick in axis.get_major_ticks():
                ticks.add(id(tick.label1))
                if ax.axison and tick.label1.get_visible() and lo <= tick.get_loc() <= hi:
                    drawn.append(tick.label1)
    drawn += [t for t in fig.findobj(matplotlib.text.Text) if id(t) not in ticks and t.get_visible()]
    box = fig.bbox
    out = []
    for text in drawn:
        if not text.get_text().strip():
            continue
        e = text.get_window_extent(renderer)
        if e.x0 < box.x0 - 0.5 or e.x1 > box.x1 + 0.5 or e.y0 < box.y0 - 0.5 or e.y1 > box.y1 + 0.5:
            out.append(text.get_text())
    return out


def _thumbs(n: int, w: int = 64, h: int = 36) -> list[np.ndarray]:
    return [np.full((h, w, 3), i % 255, np.uint8) for i in range(n)]


@pytest.mark.parametrize("thumb_shape", [(36, 64), (64, 36)])  # landscape and portrait pictures
def test_every_label_is_inside_the_picture(thumb_shape) -> None:
    r = _five_minutes_best_at_the_end()
    assert r.moments[0].end == 300.0  # the best moment ends where the video does
    fig = draw_timeline(r, r.top_k_positions(16), _thumbs(300, thumb_shape[1], thumb_shape[0]))
    try:
        assert _texts_outside(fig) == []
        labels = [t.get_text() for t in fig.axes[1].texts]
        assert labels[0].strip() == "#1 0.9812"  # four decimals tell a 0.980-0.982 band apart
        assert fig.axes[0].get_ylabel().startswith("score")
        titles = [t.get_text() for t in fig.texts]
        assert any(t.startswith("five_minutes.mp4") for t in titles)
    finally:
        plt.close(fig)


def test_a_moment_over_the_whole_video_is_labelled_inside_the_picture() -> None:
    r = _result([0.5] * 60)  # flat: one moment, the whole video
    assert len(r.moments) == 1 and r.moments[0].start == 0.0
    fig = draw_timeline(r, r.top_k_positions(8), _thumbs(60))
    try:
        assert _texts_outside(fig) == []
    finally:
        plt.close(fig)


def test_thumbnails_follow_top_k_and_say_when_some_are_left_out() -> None:
    r = _five_minutes_best_at_the_end()
    for k, drawn in ((3, 3), (16, 16), (32, 16)):
        fig = draw_timeline(r, r.top_k_positions(k), _thumbs(300))
        try:
            images = [a for a in fig.axes if a.images]
            assert len(images) == drawn
            caption = [t.get_text() for t in fig.texts if "frames, chronological" in t.get_text()]
            assert len(caption) == 1
            if drawn < k:
                assert caption[0].startswith(f"the {drawn} best of the top-{k} frames")
            else:
                assert caption[0] == f"the top-{k} frames, chronological"
        finally:
            plt.close(fig)
    best16 = thumbnail_positions(r, r.top_k_positions(32))
    assert best16 == sorted(r.ranking[:16]) and set(best16) <= set(r.top_k_positions(32))


def test_score_decimals_tell_close_scores_apart() -> None:
    assert score_decimals([0.01, 0.99]) == 2
    assert score_decimals([0.95, 0.99]) == 3
    assert score_decimals([0.9801, 0.9813]) == 4


def test_plot_writes_a_png(tmp_path) -> None:
    r = _five_minutes_best_at_the_end()
    png = plot_timeline(r, tmp_path / "t.png", r.top_k_positions(16), _thumbs(300))
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] == 1210 and im.size[1] > 600
