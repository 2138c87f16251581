"""The downstream table of select-then-answer runs (`videoitg answer-table RUN...`): lmms-eval's results files of
`--model videoitg` runs with `answer_upstream=` read into rows (task, metric, video-LLM, K, documents, selection,
value, frames used), shown as one markdown table with a column per selection and as a bar chart. A selection is
`videoitg` or `uniform`, with the run's other selection options (an adaptive `min_score=` or `coverage=`) in its name;
the frames used per document come from the run's own records (`output_dir`), so a fixed K and an adaptive selection
compare on the same questions. Reads lmms-eval's JSON and the records only: needs no lmms-eval (docs/lmms-eval.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from videoitg.errors import InputError
from videoitg.jsonio import loads, text_lines
from videoitg.lmms.answering import SELECTIONS
from videoitg.lmms.tasks import MODEL_NAME, OUTPUT_DIR
from videoitg.outputs import DEFAULT_TOP_K
from videoitg.request.options import SELECTION, RequestOptions
from videoitg.writes import write_png

RESULTS_GLOB = "*_results.json"  # lmms-eval's --output_path: <model name>/<date>_results.json


@dataclass(frozen=True)
class Row:
    """One metric of one task in one run."""

    task: str
    metric: str  # the task's metric name (with its filter when that is not "none")
    model: str  # the video-LLM: answer_model, or the upstream it was the first model of
    top_k: int
    docs: int  # documents scored (lmms-eval's n-samples, effective)
    selection: str  # "videoitg" or "uniform", then the run's other selection options ("videoitg coverage=0.9")
    value: float
    source: Path  # the results file
    frames: float | None = None  # frames sent per document, on average (None: the run's records were not found)

    @property
    def key(self) -> tuple[str, str, str, int, int]:
        return self.task, self.metric, self.model, self.top_k, self.docs


def results_files(runs: Iterable[str | Path]) -> list[Path]:
    """The lmms-eval results files of each run: the file itself, or every `*_results.json` under a folder."""
    out: list[Path] = []
    for run in runs:
        p = Path(run)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(p.rglob(RESULTS_GLOB))
            if not found:
                raise InputError(f"{p} holds no lmms-eval results file ({RESULTS_GLOB}, written by --output_path)")
            out += found
        else:
            raise InputError(f"{p} does not exist")
    return out


def model_args(value: Any) -> dict[str, str]:
    """lmms-eval's recorded `model_args` ("k=v,k=v" as given on its command line, or a dict) as strings."""
    if isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    out = {}
    for part in str(value or "").split(","):
        k, sep, v = part.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def read_rows(path: Path) -> list[Row]:
    """The rows of one lmms-eval results file; an InputError naming the file when it is not a `--model videoitg`
    run that answered (`answer_upstream=`)."""
    try:
        data = json.loads(Path(path).read_text())
        config, results, samples = data["config"], data["results"], data.get("n-samples", {})
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not an lmms-eval results file ({type(e).__name__}: {e})") from None
    if config.get("model") != MODEL_NAME:
        raise InputError(f"{path}: a run of --model {config.get('model')!r}, not --model {MODEL_NAME}")
    args = model_args(config.get("model_args"))
    upstream = args.get("answer_upstream", "")
    if upstream in ("", "None"):
        raise InputError(f"{path}: a grounding-only run (no answer_upstream=): nothing answered, so its metric "
                         "scores empty text")
    selection = args.get("selection") or "videoitg"
    if selection not in SELECTIONS:
        raise InputError(f"{path}: selection={selection!r} is not one of {', '.join(SELECTIONS)}")
    options = RequestOptions.from_text({k: v for k, v in args.items() if k in SELECTION}, f"{path}: model_args")
    adaptive = {k: v for k, v in options.given().items() if k != "top_k"}
    label = " ".join([selection, *(f"{k}={v}" for k, v in adaptive.items())])
    model = args.get("answer_model") or f"first model at {upstream}"
    top_k = options.top_k or DEFAULT_TOP_K
    rows = []
    for task, metrics in results.items():
        docs = int((samples.get(task) or {}).get("effective", 0))
        used = frames_used(args.get("output_dir"), task)
        for name, value in metrics.items():
            metric, _, flt = name.partition(",")
            if "_stderr" in metric or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # "alias", standard errors ("accuracy_stderr,none": "N/A", "accuracy_stderr_clt,none": 0.0)
            if not math.isfinite(value):
                continue
            name = metric if flt in ("", "none") else f"{metric} ({flt})"
            rows.append(Row(task, name, model, top_k, docs, label, float(value), Path(path), used))
    return rows


def frames_used(output_dir: str | None, task: str) -> float | None:
    """The frames sent per document, on average, by the run that wrote `output_dir/<task>/results.jsonl` (each
    record's `answer.frames`); None where that file is not found from here or holds no answer."""
    path = Path(output_dir or OUTPUT_DIR) / task / "results.jsonl"
    if not path.is_file():
        return None
    counts = []
    for _, line, problem in text_lines(path):
        try:
            frames = loads(line)["answer"]["frames"] if problem is None else None
        except (ValueError, KeyError, TypeError):
            continue
        if isinstance(frames, list):
            counts.append(len(frames))
    return sum(counts) / len(counts) if counts else None


def collect(runs: Iterable[str | Path]) -> list[Row]:
    """Every run's rows; of two runs with the same task, metric, video-LLM, K, documents and selection, the later
    results file (lmms-eval names them by date) counts."""
    rows: dict[tuple, Row] = {}
    for path in sorted(results_files(runs), key=lambda p: p.name):
        for row in read_rows(path):
            rows[(*row.key, row.selection)] = row
    if not rows:
        raise InputError("the runs hold no metric")
    return list(rows.values())


def _selections(rows: list[Row]) -> list[str]:
    """The selections present: `videoitg` ones first, then `uniform` ones, each kind by name."""
    present = {r.selection for r in rows}
    return sorted(present, key=lambda s: (SELECTIONS.index(s.split(" ")[0]), s))


def _value(row: Row | None) -> str:
    """A cell: the metric, and the frames used per document where the run's records say."""
    if row is None:
        return ""
    return f"{row.value:.4g}" + ("" if row.frames is None else f" ({row.frames:.3g} frames)")


def markdown(rows: list[Row]) -> str:
    """One line per task, metric, video-LLM, K and number of documents; a column per selection."""
    sels = _selections(rows)
    table: dict[tuple, dict[str, Row]] = {}
    for r in rows:
        table.setdefault(r.key, {})[r.selection] = r
    head = ["task", "metric", "video-LLM", "K", "docs", *sels]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(table, key=lambda k: (k[0], k[1], k[2], k[3], k[4])):
        task, metric, model, k, docs = key
        cells = [task, metric, model, str(k), str(docs), *(_value(table[key].get(s)) for s in sels)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(rows: list[Row], out: str | Path) -> Path:
    """One panel per task, metric and video-LLM: the metric at each K (x), a bar per selection."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    sels = _selections(rows)
    panels: dict[tuple[str, str, str], list[Row]] = {}
    for r in rows:
        panels.setdefault((r.task, r.metric, r.model), []).append(r)
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False)
    width = 0.8 / max(1, len(sels))
    for ax, ((task, metric, model), group) in zip(axes[:, 0], sorted(panels.items()), strict=True):
        ks = sorted({r.top_k for r in group})
        docs = sorted({r.docs for r in group})
        for i, sel in enumerate(sels):
            by_k = {r.top_k: r.value for r in group if r.selection == sel}
            xs = [j + (i - (len(sels) - 1) / 2) * width for j, k in enumerate(ks) if k in by_k]
            ys = [by_k[k] for k in ks if k in by_k]
            bars = ax.bar(xs, ys, width, label=sel)
            ax.bar_label(bars, fmt="%.3g", fontsize=8)
        ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {model} ({'/'.join(map(str, docs))} docs)", fontsize=10)
        ax.legend(title="frames", fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside, not on, bars
        ax.margins(y=0.15)
    fig.tight_layout()
    return write_png(fig, out)
