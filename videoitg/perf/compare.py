"""`videoitg perf compare RUN_DIR...`: two or more runs' perf.json side by side, one Markdown table and one PNG, each
run labelled by what differed in what it recorded (the deployment's options, the server's version, the machine),
never by hand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from videoitg.errors import InputError
from videoitg.writes import write_png, write_whole

MAX_LABEL = 160  # characters of a run's label before it is cut


def load(run: Path) -> dict[str, Any]:
    path = run / "perf.json" if run.is_dir() else run
    try:
        report = json.loads(path.read_text())
    except OSError as e:
        raise InputError(f"{run}: no perf.json to compare ({e.strerror or e})") from None
    except ValueError as e:
        raise InputError(f"{path}: not a perf report ({e})") from None
    if "series" not in report or "measured" not in report:
        raise InputError(f"{path}: not a `videoitg perf` report (no series or measured block)")
    return report


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """A nested record as {"a.b.c": "value"}, lists joined."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list):
        return {prefix: "; ".join(json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v) for v in value)}
    return {prefix: str(value)}


def configuration(report: dict[str, Any]) -> dict[str, str]:
    """What a run's result depends on: the deployment (a parameter every model holds alike named once, by its
    name; the rest by model), the server's version and the machine (not the date, URL or where its videos lay)."""
    m = report["measured"]
    models = m.get("deployment", {})
    values: dict[str, set[str]] = {}
    for cfg in models.values():
        for k, v in cfg.get("parameters", {}).items():
            values.setdefault(k, set()).add(v)
    shared = {k: next(iter(v)) for k, v in values.items() if len(v) == 1}
    deployment: dict[str, Any] = dict(shared)
    for name, cfg in models.items():
        own = {k: v for k, v in cfg.items() if k != "parameters"}
        own.update({k: v for k, v in cfg.get("parameters", {}).items() if k not in shared})
        deployment[name] = own
    return flatten({"deployment": deployment, "tritonserver": m["server"].get("tritonserver"),
                    "machine": {k: m.get("machine", {}).get(k) for k in ("cpu", "cores", "gpus")},
                    "videos": [{k: v for k, v in video.items() if k != "path"} for video in m.get("videos", [])]})


def labels(reports: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Each run's label: the configuration keys whose values differ between the runs, as key=value (the models'
    names and the `parameters.` level shortened); (labels, the differing keys)."""
    configs = [configuration(r) for r in reports]
    keys = sorted({k for c in configs for k in c})
    differ = [k for k in keys if len({c.get(k) for c in configs}) > 1]

    def short(key: str) -> str:
        return key.removeprefix("deployment.").replace("videoitg_", "")

    out = []
    for i, c in enumerate(configs):
        text = ", ".join(f"{short(k)}={c.get(k, '-')}" for k in differ) or f"run {i + 1} (same configuration)"
        out.append(text if len(text) <= MAX_LABEL else text[:MAX_LABEL - 3] + "...")
    return out, differ


def compare(runs: list[Path], out: Path) -> tuple[Path, Path]:
    """compare.md and compare.png for `runs` in `out`."""
    if len(runs) < 2:
        raise InputError("perf compare needs two or more run folders (each holding a perf.json)")
    reports = [load(r) for r in runs]
    names, differ = labels(reports)
    lines = [f"# {len(runs)} runs compared", "",
             "What differs between them (read from each run's perf.json): " + (", ".join(differ) or "nothing"), "",
             "| run | label | series | concurrency | infer/s | p50 ms | p99 ms | per request, ms: queue+compute by "
             "step; other |", "|---|---|---|---|---|---|---|---|"]
    for run, name, report in zip(runs, names, reports, strict=True):
        for series, s in report["series"].items():
            for r in s.get("rows", []):
                split = r.get("split", {})
                steps = ", ".join(f"{m.removeprefix('videoitg_')} {v['queue_ms']:.1f}+{v['compute_ms']:.1f}"
                                  for m, v in split.get("steps", {}).items())
                lines.append(f"| {run} | {name} | {series} | {r['concurrency']} | {r['infer_per_s']:.2f} | "
                             f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {steps}; other {split.get('other_ms', 0):.1f} |")
    out.mkdir(parents=True, exist_ok=True)
    write_whole(out / "compare.md", "\n".join(lines) + "\n")
    return out / "compare.md", picture(reports, names, out / "compare.png")


def picture(reports: list[dict[str, Any]], names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from videoitg.perf.plot import against_concurrency

    fig, (rate, p99) = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, report) in enumerate(zip(names, reports, strict=True)):
        for series, s in report["series"].items():
            rows = s.get("rows", [])
            conc = [r["concurrency"] for r in rows]
            dash = "--" if series == "cached" else "-"
            label = f"{name} ({series})"
            rate.plot(conc, [r["infer_per_s"] for r in rows], dash, marker="o", color=colours[i % len(colours)],
                      label=label)
            p99.plot(conc, [r["p99_ms"] for r in rows], dash, marker="^", color=colours[i % len(colours)],
                     label=label)
    for ax, ylabel, title in ((rate, "requests / s", "throughput"), (p99, "ms", "p99 latency")):
        against_concurrency(ax, ylabel, title)
    rate.legend(fontsize=7, loc="upper center", bbox_to_anchor=(1.1, -0.15), ncol=1)
    fig.tight_layout()
    return write_png(fig, path)
