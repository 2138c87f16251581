"""perf.png: throughput and p50/p95/p99 latency against concurrency (cold and cached on the same axes when both were
measured), and where a request's time goes at each level: each step's queue and compute time and the rest of the
latency, stacked, beside the client's mean latency (steps that ran at once, a decode streaming into the vision step,
stack above it). The numbers drawn are perf.json's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from videoitg.writes import write_png

STYLE = {"cold": ("#4c72b0", "-"), "cached": ("#dd8452", "--")}
PERCENTILES = (("p50_ms", "o", "p50"), ("p95_ms", "s", "p95"), ("p99_ms", "^", "p99"))
STEP_COLOURS = {"videoitg_decode": "#4c72b0", "videoitg_vision": "#55a868", "videoitg_grounding": "#c44e52"}


def plot(report: dict[str, Any], out: Path) -> Path:
    """Draw `report` (perf.json's content) to `out`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: v for k, v in report["series"].items() if v.get("rows")}
    cols = max(2, len(series))
    fig, grid = plt.subplots(2, cols, figsize=(5.6 * cols, 8.2), squeeze=False)
    rate, latency = grid[0][0], grid[0][1]
    for ax in [*grid[0][2:], *grid[1][len(series):]]:
        ax.set_visible(False)
    for name, s in series.items():
        colour, dash = STYLE.get(name, ("#333333", "-"))
        conc = [r["concurrency"] for r in s["rows"]]
        rate.plot(conc, [r["infer_per_s"] for r in s["rows"]], dash, marker="o", color=colour, label=name)
        for key, marker, what in PERCENTILES:
            latency.plot(conc, [r[key] for r in s["rows"]], dash, marker=marker, color=colour, label=f"{name} {what}")
    for ax, ylabel, title in ((rate, "requests / s", "throughput"), (latency, "ms", "latency")):
        against_concurrency(ax, ylabel, title)
        ax.legend(fontsize=7)
    for ax, (name, s) in zip(grid[1], series.items(), strict=False):
        split_bars(ax, name, s["rows"], report.get("device_time_s"),
                   report.get("measured", {}).get("decode_outside_compute", False))
    fig.suptitle(subtitle(report), fontsize=8)
    fig.tight_layout()
    return write_png(fig, out)


def against_concurrency(ax: Any, ylabel: str, title: str) -> None:
    """An axes of a figure against concurrency: whole levels, from 0 up, a light grid."""
    ax.set_xlabel("concurrency")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)


def split_bars(ax: Any, name: str, rows: list[dict[str, Any]], device: dict[str, float] | None,
               decode_outside: bool) -> None:
    """One stacked bar per level: each step's queue (hatched) and compute, then `other`."""
    labels = [str(r["concurrency"]) for r in rows]
    seen: set[str] = set()
    for x, r in enumerate(rows):
        bottom = 0.0
        for step, t in r["split"]["steps"].items():
            colour = STEP_COLOURS.get(step, "#8172b2")
            short = step.removeprefix("videoitg_")
            for part, hatch in (("queue_ms", "//"), ("compute_ms", None)):
                if not t[part]:
                    continue
                label = f"{short} {part.removesuffix('_ms')}"
                ax.bar(x, t[part], bottom=bottom, color=colour, hatch=hatch, alpha=0.55 if hatch else 0.9,
                       edgecolor="white", label=label if label not in seen else None)
                seen.add(label)
                bottom += t[part]
        other = r["split"]["other_ms"]
        if other:
            ax.bar(x, other, bottom=bottom, color="#bbbbbb", label="other" if "other" not in seen else None)
            seen.add("other")
        # the client's mean latency: steps that ran at once (a decode streaming into the vision step) reach above it
        ax.plot([x - 0.45, x + 0.45], [r["mean_ms"]] * 2, color="black", lw=1.5,
                label="mean latency" if "latency" not in seen else None)
        seen.add("latency")
        ax.text(x, max(bottom + other, r["mean_ms"]), f"{r['mean_ms']:.0f}", ha="center", va="bottom", fontsize=7)
    if device:
        ms = 1e3 * device.get("kernels_s", device.get("events_s", 0.0))
        ax.axhline(ms, color="#c44e52", ls="--", lw=1)
        ax.text(len(rows) - 0.5, ms, f"GPU time {ms:.0f} ms", color="#c44e52", fontsize=7, ha="right", va="bottom")
    ax.set_xticks(range(len(rows)), labels)
    ax.set_xlabel("concurrency")
    ax.set_ylabel("ms per request (queue hatched)")
    note = " (decode: hand-off only, NVDEC pool)" if decode_outside else ""
    ax.set_title(f"{name}: where the time goes{note}", fontsize=10)
    ax.legend(fontsize=7)


def subtitle(report: dict[str, Any]) -> str:
    m = report.get("measured", {})
    gpu = ", ".join(g.get("name", "") for g in m.get("machine", {}).get("gpus", [])) or "no GPU"
    vids = ", ".join(f"{v.get('width', '?')}x{v.get('height', '?')} {v.get('codec', '?')} "
                     f"{v.get('duration_s', 0):.0f} s" for v in m.get("videos", []))
    return (f"tritonserver {m.get('server', {}).get('tritonserver')} at {m.get('server', {}).get('url')}; "
            f"{m.get('machine', {}).get('cpu', '?')} x{m.get('machine', {}).get('cores', '?')}, {gpu}; "
            f"{m.get('date', '')}; videos: {vids}")
