"""The picture of a result: relevance (saliency) over time, the moments and the picked frames marked, and thumbnails
of the picked frames in the video's own aspect ratio."""

from __future__ import annotations

from typing import TYPE_CHECKING

from videoitg.moments import Moment

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from videoitg.outputs import GroundingResult
from videoitg.writes import write_png

# Below this spread the y axis follows the data instead of spanning [0, 1], so a curve that lives in a narrow band
# (e.g. every score within 0.95-0.99) still shows its shape.
ZOOM_BELOW_SPREAD = 0.5


def display_aspect(info: Any) -> float | None:
    """Width / height of the upright picture from a `VideoInfo` (coded size, turned by the display rotation)."""
    if info is None or not getattr(info, "width", 0) or not getattr(info, "height", 0):
        return None
    w, h = info.width, info.height
    return h / w if info.rotation in (90, 270) else w / h


def thumbnails_from_pixels(pixel_values: torch.Tensor, aspect: float | None = None) -> list[np.ndarray]:
    """Decoded frames [T, 3, S, S] (uint8, or SigLIP-normalised float) -> list of uint8 images. The model input
    is squashed to a square; `aspect` (width / height of the video) stretches each thumbnail back
    to the picture's shape."""
    x = pixel_values.cpu()
    if x.dtype != torch.uint8:
        x = ((x.float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
    images = list(x.permute(0, 2, 3, 1).numpy())
    if aspect is None or abs(aspect - 1.0) < 1e-3:
        return images
    s = images[0].shape[0] if images else 0
    size = (round(s * aspect), s) if aspect > 1 else (s, round(s / aspect))
    return [np.asarray(Image.fromarray(im).resize(size, Image.BILINEAR)) for im in images]


def _score_limits(scores: list[float]) -> tuple[tuple[float, float], bool]:
    lo, hi = min(scores), max(scores)
    if hi - lo >= ZOOM_BELOW_SPREAD:
        return (-0.02, 1.02), False
    pad = max((hi - lo) * 0.08, 1e-4)
    return (max(0.0, lo - pad), min(1.0, hi + pad) + pad * 0.5), True


def score_decimals(scores: list[float]) -> int:
    """Decimals that tell this video's scores apart: 2 on the full [0, 1] axis, more for a narrow band (every score
    within 0.980-0.982 needs 4), at most 5."""
    spread = max(scores) - min(scores) if scores else 1.0
    if spread >= ZOOM_BELOW_SPREAD:
        return 2
    return min(5, max(3, math.ceil(-math.log10(max(spread, 1e-5))) + 1))


# Layout, in inches (the figure is 11 inches wide; its height follows from the rows drawn).
WIDTH_IN = 11.0
MARGIN_IN = 0.15  # kept free at the figure's edges
TITLE_IN, LEGEND_IN, SCORES_IN, GAP_IN, MOMENTS_IN, XLABEL_IN = 0.62, 0.28, 2.0, 0.25, 0.6, 0.5
CAPTION_IN, THUMB_TITLE_IN = 0.3, 0.22
THUMBS_PER_ROW = 8
MAX_THUMBS = 16  # two rows; past that, the best 16 of the picked frames are drawn and the caption says so


def plot_timeline(result: GroundingResult, out: str | Path, picked: Sequence[int],
                  thumbnails: Sequence[np.ndarray] | Mapping[int, np.ndarray] | None = None,
                  truth_segments: list[tuple[float, float]] | None = None) -> Path:
    """Write the timeline PNG; `picked`: positions of the picked frames (`videoitg.request.options.select`);
    `truth_segments` (seconds), when known, are shaded green. `thumbnails`: images by position (every sampled
    frame's, or a mapping holding at least the picked ones)."""
    import matplotlib  # here: pyplot loads when a figure is drawn, after the Agg backend is chosen (no display)

    matplotlib.use("Agg")
    return write_png(draw_timeline(result, picked, thumbnails, truth_segments), out)


def thumbnail_positions(result: GroundingResult, picked: Sequence[int], limit: int = MAX_THUMBS) -> list[int]:
    """The picked positions that get a thumbnail: all of them up to `limit`, else the `limit` best; chronological."""
    if len(picked) <= limit:
        return sorted(picked)
    chosen = set(picked)
    return sorted([p for p in result.ranking if p in chosen][:limit])


def draw_timeline(result: GroundingResult, picked: Sequence[int],
                  thumbnails: Sequence[np.ndarray] | Mapping[int, np.ndarray] | None = None,
                  truth_segments: list[tuple[float, float]] | None = None):
    """The timeline as a matplotlib Figure (Agg): title (the video's name, the instruction), the per-frame scores with
    the picked frames (positions) marked, the moments, thumbnails of the picked frames. Every label lies inside the
    figure."""
    import matplotlib.pyplot as plt

    chosen = sorted(picked)
    thumbs = thumbnail_positions(result, chosen) if thumbnails is not None else []
    rows = math.ceil(len(thumbs) / THUMBS_PER_ROW)
    # A row as tall as a thumbnail of the picture's aspect at its width, plus its title line.
    cell_in = WIDTH_IN * 0.9 / THUMBS_PER_ROW * 0.95
    image_in = cell_in * (thumbnails[thumbs[0]].shape[0] / thumbnails[thumbs[0]].shape[1]) if thumbs else 0.0
    row_in = image_in + THUMB_TITLE_IN
    height = (MARGIN_IN + TITLE_IN + LEGEND_IN + SCORES_IN + GAP_IN + MOMENTS_IN + XLABEL_IN
              + (CAPTION_IN + rows * row_in if rows else 0) + MARGIN_IN)
    fig = plt.figure(figsize=(WIDTH_IN, height))

    def band(top_in: float, size_in: float) -> tuple[float, float]:
        """(bottom, height) as figure fractions of a band `size_in` tall whose top is `top_in` below the top."""
        return 1.0 - (top_in + size_in) / height, size_in / height

    left, width = 0.07, 0.9  # the left margin grows below if the y-axis labels need more room
    y = MARGIN_IN + TITLE_IN + LEGEND_IN
    ax = fig.add_axes([left, *_xy(band(y, SCORES_IN), width)])
    y += SCORES_IN + GAP_IN
    mx = fig.add_axes([left, *_xy(band(y, MOMENTS_IN), width)], sharex=ax)
    y += MOMENTS_IN + XLABEL_IN

    t, s = result.timestamps, result.scores
    ax.plot(t, s, color="#3b6ea8", lw=1.5, marker="o", ms=2.5, label="relevance per frame (saliency)")
    ax.scatter([t[i] for i in chosen], [s[i] for i in chosen], color="#d1495b", zorder=3, s=28,
               label=f"top-{len(chosen)} frames")
    for j, (a, b) in enumerate(truth_segments or []):
        for axis in (ax, mx):
            axis.axvspan(a, b, color="#2a9d8f", alpha=0.15, label="ground truth" if j == 0 and axis is ax else None)
    for i in chosen:
        ax.axvline(t[i], color="#d1495b", alpha=0.15, lw=3)
    (y0, y1), zoomed = _score_limits(s)
    digits = score_decimals(s)
    ax.set_ylim(y0, y1)
    ax.set_ylabel("score (axis zoomed\nto the data)" if zoomed else "score", fontsize=9 if zoomed else 10)
    ax.tick_params(labelbottom=False)
    name = Path(result.video).name if result.video else "(video given as bytes)"
    title = result.instruction if len(result.instruction) < 100 else result.instruction[:97] + "..."
    frames = f"{len(t)} sampled frames, {_clock(t[0])} to {_clock(t[-1])}" if t else "no frames"
    fig.text(0.5, 1.0 - (MARGIN_IN + 0.05) / height, f"{name}  ({frames})", ha="center", va="top", fontsize=10,
             fontweight="bold")
    fig.text(0.5, 1.0 - (MARGIN_IN + 0.33) / height, f"\"{title}\"", ha="center", va="top", fontsize=10)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=4, fontsize=8, frameon=False, borderaxespad=0.0)
    moments = result.moments
    for j, m in enumerate(moments):
        mx.barh(j, m.end - m.start, left=m.start, height=0.7, color="#e9a03b", alpha=1.0 if j == 0 else 0.5)
    mx.set_ylim(max(len(moments), 1) - 0.5, -0.5)
    mx.set_yticks([])
    mx.set_ylabel("moments", fontsize=8)
    mx.set_xlabel("time (s)")
    if t:
        span = t[-1] - t[0] if len(t) > 1 else 1.0
        ax.set_xlim(t[0] - 0.02 * span, max([t[-1]] + [m.end for m in moments]) + 0.02 * span)

    # Room for the y-axis labels: long tick labels (a narrow band's 0.98125) would push them off the left edge.
    renderer = fig.canvas.get_renderer()
    fig_w = fig.get_figwidth() * fig.dpi
    need = MARGIN_IN * fig.dpi - min(a.get_tightbbox(renderer).x0 for a in (ax, mx))
    if need > 0:
        left, width = left + need / fig_w, width - need / fig_w
        for a in (ax, mx):
            box = a.get_position()
            a.set_position([left, box.y0, width, box.height])
    _label_moments(mx, moments, digits, renderer)

    if thumbs:
        caption = (f"the top-{len(chosen)} frames, chronological" if len(thumbs) == len(chosen) else
                   f"the {len(thumbs)} best of the top-{len(chosen)} frames, chronological (all {len(chosen)} are "
                   "marked above)")
        fig.text(left, 1.0 - (y + CAPTION_IN * 0.8) / height, caption, ha="left", va="bottom", fontsize=8)
        y += CAPTION_IN
        w = width / THUMBS_PER_ROW
        for j, i in enumerate(thumbs):
            row, col = divmod(j, THUMBS_PER_ROW)
            bottom, h = band(y + row * row_in + THUMB_TITLE_IN, image_in)
            tax = fig.add_axes([left + col * w, bottom, w * 0.95, h])
            tax.imshow(thumbnails[i])  # the thumbnail already has the picture's aspect (thumbnails_from_pixels)
            tax.set_title(f"{t[i]:.1f}s  {s[i]:.{digits}f}", fontsize=7)
            tax.axis("off")
    return fig


def _xy(band: tuple[float, float], width: float) -> list[float]:
    return [band[0], width, band[1]]


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _label_moments(mx: Axes, moments: Sequence[Moment], digits: int, renderer: RendererBase) -> None:
    """Each moment's "#rank score" beside its bar: after its end, else before its start, else inside it; never past
    the strip's edges (a moment that ends at the video's end is labelled on its left)."""
    inside = mx.get_window_extent(renderer)
    for j, m in enumerate(moments):
        label = mx.text(m.end, j, f" #{j + 1} {m.score:.{digits}f} ", va="center", ha="left", fontsize=7,
                        clip_on=False)
        if label.get_window_extent(renderer).x1 <= inside.x1:
            continue
        label.set_x(m.start)
        label.set_ha("right")
        if label.get_window_extent(renderer).x0 >= inside.x0:
            continue
        label.set_x((m.start + m.end) / 2)
        label.set_ha("center")
