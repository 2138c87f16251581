"""The picture of a result: relevance over time, the chosen top-K frames marked, thumbnails of the top frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from videoitg.outputs import GroundingResult


def thumbnails_from_pixels(pixel_values: torch.Tensor) -> list[np.ndarray]:
    """Decoded frames [T, 3, S, S] (uint8, or SigLIP-normalised float) -> list of [S, S, 3] uint8 images."""
    x = pixel_values.cpu()
    if x.dtype != torch.uint8:
        x = ((x.float() + 1.0) * 127.5).clamp(0, 255).round().to(torch.uint8)
    return list(x.permute(0, 2, 3, 1).numpy())


def plot_timeline(result: GroundingResult, out: str | Path, top_k: int = 8,
                  thumbnails: list[np.ndarray] | None = None, max_thumbs: int = 8,
                  truth_segments: list[tuple[float, float]] | None = None) -> Path:
    """Write the timeline PNG; `truth_segments` (seconds), when known, are shaded green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = result.top_k_positions(top_k)
    thumbs = chosen[:max_thumbs] if thumbnails is not None else []
    fig = plt.figure(figsize=(11, 4.8 if thumbs else 3.2))
    ax = fig.add_axes([0.07, 0.42 if thumbs else 0.15, 0.9, 0.5 if thumbs else 0.72])
    t, s = result.timestamps, result.scores
    ax.plot(t, s, color="#3b6ea8", lw=1.5, label="relevance (sigmoid)")
    ax.scatter([t[i] for i in chosen], [s[i] for i in chosen], color="#d1495b", zorder=3, s=28,
               label=f"top-{len(chosen)} frames")
    for j, (a, b) in enumerate(truth_segments or []):
        ax.axvspan(a, b, color="#2a9d8f", alpha=0.15, label="ground truth" if j == 0 else None)
    for i in chosen:
        ax.axvline(t[i], color="#d1495b", alpha=0.15, lw=3)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_ylim(-0.02, 1.02)
    title = result.instruction if len(result.instruction) < 90 else result.instruction[:87] + "..."
    ax.set_title(f"\"{title}\"", fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    for j, i in enumerate(thumbs):
        w = 0.9 / max(len(thumbs), 1)
        tax = fig.add_axes([0.07 + j * w, 0.02, w * 0.95, 0.26])
        tax.imshow(thumbnails[i])
        tax.set_title(f"{t[i]:.1f}s  {s[i]:.2f}", fontsize=7)
        tax.axis("off")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
