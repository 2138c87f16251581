"""What the benchmarks' pictures share: one legend entry per label, and the figure written as a PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def legend_once(ax: Any, **kwargs: Any) -> None:
    """The axes' legend with each label once (stacked bars label a stage on several bars)."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), **kwargs)


def save(fig: Any, out: Path) -> Path:
    """`fig` laid out and written to `out` (110 dpi), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
