"""The picture of a result: relevance (saliency) over time, the moments and the chosen top-K frames marked, and
thumbnails of the top frames in the video's own aspect ratio."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoitg.outputs import GroundingResult

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
    from PIL import Image

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


def plot_timeline(result: GroundingResult, out: str | Path, top_k: int = 8,
                  thumbnails: list[np.ndarray] | None = None, max_thumbs: int = 8,
                  truth_segments: list[tuple[float, float]] | None = None) -> Path:
    """Write the timeline PNG; `truth_segments` (seconds), when known, are shaded green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = result.top_k_positions(top_k)
    thumbs = chosen[:max_thumbs] if thumbnails is not None else []
    fig = plt.figure(figsize=(11, 5.6 if thumbs else 4.0))
    # Top to bottom: title, legend band, scores, moment strip (shares the time axis), thumbnails. Nothing is drawn
    # over the curve: the legend has its own band and the moments their own strip.
    if thumbs:
        ax = fig.add_axes([0.07, 0.52, 0.9, 0.36])
        mx = fig.add_axes([0.07, 0.37, 0.9, 0.1], sharex=ax)
    else:
        ax = fig.add_axes([0.07, 0.42, 0.9, 0.44])
        mx = fig.add_axes([0.07, 0.14, 0.9, 0.19], sharex=ax)
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
    ax.set_ylim(y0, y1)
    ax.set_ylabel("score (axis zoomed\nto the data)" if zoomed else "score", fontsize=9 if zoomed else 10)
    ax.tick_params(labelbottom=False)
    title = result.instruction if len(result.instruction) < 90 else result.instruction[:87] + "..."
    fig.suptitle(f"\"{title}\"", fontsize=10, y=0.985)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.01), ncol=4, fontsize=8, frameon=False, borderaxespad=0.0)
    moments = result.moments
    for j, m in enumerate(moments):
        mx.barh(j, m.end - m.start, left=m.start, height=0.7, color="#e9a03b", alpha=1.0 if j == 0 else 0.5)
        mx.text(m.end, j, f" #{j + 1} {m.score:.3f}" if zoomed else f" #{j + 1} {m.score:.2f}", va="center",
                fontsize=7, clip_on=True)
    mx.set_ylim(max(len(moments), 1) - 0.5, -0.5)
    mx.set_yticks([])
    mx.set_ylabel("moments", fontsize=8)
    mx.set_xlabel("time (s)")
    if t:
        span = t[-1] - t[0] if len(t) > 1 else 1.0
        ax.set_xlim(t[0] - 0.02 * span, max([t[-1]] + [m.end for m in moments]) + 0.02 * span)
    for j, i in enumerate(thumbs):
        w = 0.9 / max(len(thumbs), 1)
        tax = fig.add_axes([0.07 + j * w, 0.02, w * 0.95, 0.26])
        tax.imshow(thumbnails[i])  # the thumbnail already has the picture's aspect (thumbnails_from_pixels)
        tax.set_title(f"{t[i]:.1f}s  {s[i]:.3f}" if zoomed else f"{t[i]:.1f}s  {s[i]:.2f}", fontsize=7)
        tax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
