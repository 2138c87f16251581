"""Evaluated queries into tables: every metric of one query (model and uniform baseline), their means per
instruction kind, the plain-text tables and QVHighlights' submission lines."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from videoitg.eval.metrics import (
    DEFAULT_KS,
    LENGTH_BUCKETS,
    QVH_CLIP_S,
    R1_THRESHOLDS,
    R5_THRESHOLDS,
    average_precision,
    best_iou,
    clip_count,
    clip_scores,
    highlight_metrics,
    moment_map,
    positive_moments,
    positives_from_moments,
    precision_at_k,
    ranking,
    recall_at_k,
    uniform_indices,
)
from videoitg.moments import DEFAULT_PARAMS, Moment, MomentParams, find_moments, frame_spans


# ---- aggregation ------------------------------------------------------------------------------------------
@dataclass
class RecordScores:
    """One evaluated query: scores over T sampled frames and its ground truth."""

    scores: Sequence[float]
    positives: Sequence[int]
    timestamps: Sequence[float]
    kind: str = "all"
    moments: Sequence[Sequence[float]] | None = None  # ground-truth [start, end] seconds; else from positives
    duration: float | None = None
    saliency: Sequence[Sequence[float]] | None = None  # QVHighlights [clip][annotator] scores 0-4
    info: dict = field(default_factory=dict)  # what identifies the query in per_record.jsonl
    order: Sequence[int] | None = None  # positions best first (a ranking rule's); None: by score, stable


@dataclass
class Summary:
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> metric -> value
    counts: dict[str, int] = field(default_factory=dict)
    # group -> metric -> records it is the mean of, for the metrics only some records have (MR-<bucket>-mAP)
    support: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"counts": self.counts, "metrics": self.rows, "support": self.support}


def ground_truth_windows(r: RecordScores) -> list[tuple[float, float]]:
    if r.moments:
        return [(float(a), float(b)) for a, b in r.moments]
    return positive_moments(r.positives, r.timestamps, r.duration)


def predicted_moments(r: RecordScores, params: MomentParams = DEFAULT_PARAMS) -> list[Moment]:
    """The record's moments, best first: the rule every output uses, inside [0, duration] when it is known."""
    return find_moments(r.scores, r.timestamps, params, r.duration)


def evaluate_record(r: RecordScores, ks: Sequence[int] = DEFAULT_KS, params: MomentParams = DEFAULT_PARAMS,
                    saliency_min: float = 4) -> tuple[dict[str, float], dict]:
    """All metrics of one record (model and uniform baseline), and its per_record.jsonl row."""
    t = len(r.scores)
    pos = sorted(set(int(p) for p in r.positives))
    if not pos:
        raise ValueError("record has no positive frames")
    if pos[0] < 0 or pos[-1] >= t:
        raise ValueError(f"positive frame {pos[-1] if pos[-1] >= t else pos[0]} is outside 0..{t - 1}")
    order = np.asarray(r.order) if r.order is not None else ranking(r.scores)
    m: dict[str, float] = {}
    npos = len(pos)
    m["recall@#pos"] = recall_at_k(order, pos, npos)
    m["uniform_recall@#pos"] = recall_at_k(uniform_indices(t, npos), pos, npos)
    for k in ks:
        m[f"recall@{k}"] = recall_at_k(order, pos, k)
        m[f"precision@{k}"] = precision_at_k(order, pos, k)
        uni = uniform_indices(t, k)
        m[f"uniform_recall@{k}"] = recall_at_k(uni, pos, k)
        m[f"uniform_precision@{k}"] = precision_at_k(uni, pos, k)
    m["AP"] = average_precision(order, pos)
    gt = ground_truth_windows(r)
    pred = predicted_moments(r, params)
    ious = [best_iou(p, gt) for p in pred]
    m["mIoU"] = ious[0]
    for th in R1_THRESHOLDS:
        m[f"R1@{th}"] = float(ious[0] >= th)
    for th in R5_THRESHOLDS:
        m[f"R5@{th}"] = float(any(iou >= th for iou in ious[:5]))
    m.update(moment_map(pred, gt))
    m.update(highlight_metrics(r.scores, r.timestamps, pos, r.saliency, saliency_min))
    row = {**r.info, "type": r.kind, "gt_windows": [[round(a, 3), round(b, 3)] for a, b in gt], "positives": pos,
           "moments": [p.round() for p in pred], "iou": round(ious[0], 4), "ious": [round(x, 4) for x in ious],
           "timestamps": [round(float(x), 3) for x in r.timestamps], "scores": [round(float(s), 5) for s in r.scores]}
    if r.order is not None:
        row["ranking"] = [int(i) for i in r.order]  # positions best first, as the ranking rule ordered them
    return m, row


def record_metrics(r: RecordScores, ks: Sequence[int] = DEFAULT_KS, params: MomentParams = DEFAULT_PARAMS,
                   saliency_min: float = 4) -> dict[str, float]:
    return evaluate_record(r, ks, params, saliency_min)[0]


def summarize(records: Iterable[RecordScores], ks: Sequence[int] = DEFAULT_KS,
              params: MomentParams = DEFAULT_PARAMS, saliency_min: float = 4,
              rows: list[dict] | None = None) -> Summary:
    """Mean of every metric per instruction kind and over all records ("all"). `rows`, when given, receives each
    record's per_record.jsonl row."""
    per: dict[str, list[dict[str, float]]] = {}
    for r in records:
        m, row = evaluate_record(r, ks, params, saliency_min)
        if rows is not None:
            rows.append(row)
        per.setdefault("all", []).append(m)
        if r.kind != "all":
            per.setdefault(r.kind, []).append(m)
    out = Summary()
    for group, ms in per.items():
        out.counts[group] = len(ms)
        keys = list(dict.fromkeys(k for x in ms for k in x))  # first-seen order
        out.rows[group] = {k: float(np.mean([x[k] for x in ms if k in x])) for k in keys}
        out.support[group] = {k: n for k in keys if (n := sum(k in x for x in ms)) != len(ms)}
    return out


def submission_record(r: RecordScores, params: MomentParams = DEFAULT_PARAMS) -> dict:
    """One line of the QVHighlights submission file (its `standalone_eval` format): `qid`, `query`, `vid`,
    `pred_relevant_windows` [[start_s, end_s, score], ...] (the evaluated moments, best first, unrounded, so the
    official evaluation sees what was evaluated here) and `pred_saliency_scores`, one per 2-s clip of the video
    (`clip_scores`; as many clips as the annotation's saliency table, else whole clips of the duration)."""
    if r.saliency is not None:
        n = len(r.saliency)
    elif r.duration:
        n = clip_count(r.duration)
    else:
        n = max(math.ceil(frame_spans(r.timestamps)[-1][1] / QVH_CLIP_S), 1)
    return {"qid": r.info.get("qid"), "query": r.info.get("query"), "vid": r.info.get("vid"),
            "pred_relevant_windows": [[m.start, m.end, m.score] for m in predicted_moments(r, params)],
            "pred_saliency_scores": clip_scores(r.scores, r.timestamps, n)}


FRAME_COLUMNS = ("recall@#pos", "AP")
MOMENT_COLUMNS = ("R1@0.3", "R1@0.5", "R1@0.7", "R5@0.5", "R5@0.7", "mIoU", "HL-mAP", "HL-HIT@1")
BUCKET_COLUMNS = tuple(f"MR-{name}-mAP" for name in LENGTH_BUCKETS)
MAP_COLUMNS = ("MR-mAP", "MR-mAP@0.5", "MR-mAP@0.75", *BUCKET_COLUMNS)


def format_table(summary: Summary, ks: Sequence[int] = DEFAULT_KS) -> str:
    """Two plain-text tables: frame metrics (model and uniform sampling at the same K), then moment retrieval and
    highlight detection (model only: uniform sampling has no scores to cut moments from)."""
    groups = sorted(summary.rows, key=lambda g: (g != "all", g))
    cols = ["recall@#pos"] + [f"recall@{k}" for k in ks] + [f"precision@{k}" for k in ks] + ["AP"]
    header = f"{'group':<16}{'method':<9}{'n':>6}" + "".join(f"{c:>13}" for c in cols)
    lines = ["frame selection", header, "-" * len(header)]
    for group in groups:
        row, n = summary.rows[group], summary.counts[group]
        for method in ("model", "uniform"):
            vals = [row.get(c if method == "model" else f"uniform_{c}") for c in cols]
            lines.append(f"{group:<16}{method:<9}{n:>6}" + "".join(_cell(v) for v in vals))
    header = f"{'group':<16}{'n':>6}" + "".join(f"{c:>11}" for c in MOMENT_COLUMNS)
    lines += ["", "moment retrieval and highlight detection", header, "-" * len(header)]
    for group in groups:
        row, n = summary.rows[group], summary.counts[group]
        lines.append(f"{group:<16}{n:>6}" + "".join(_cell(row.get(c), 11) for c in MOMENT_COLUMNS))
    header = f"{'group':<16}{'n':>6}" + "".join(f"{c:>15}" for c in MAP_COLUMNS)
    lines += ["", "moment retrieval mAP (QVHighlights standalone_eval definition; buckets: n = queries with a window "
              "of that length)", header, "-" * len(header)]
    for group in groups:
        row, n, support = summary.rows[group], summary.counts[group], summary.support.get(group, {})
        cells = [_bucket_cell(row.get(c), support.get(c, n if c in row else 0)) if c in BUCKET_COLUMNS
                 else _cell(row.get(c), 15) for c in MAP_COLUMNS]
        lines.append(f"{group:<16}{n:>6}" + "".join(cells))
    return "\n".join(lines)


def _bucket_cell(v: float | None, n: int, width: int = 15) -> str:
    text = f"{v:.3f} (n={n})" if v is not None and not math.isnan(v) else "-"
    return f"{text:>{width}}"


def _cell(v: float | None, width: int = 13) -> str:
    return f"{v:>{width}.3f}" if v is not None and not math.isnan(v) else f"{'-':>{width}}"


# ---- an annotation record's identity and positives ----------------------------------------------------------
def query_where(r: Any) -> str:
    w = getattr(r, "where", "")
    return w() if callable(w) else str(w)


def query_info(r: Any) -> dict:
    """What identifies a query in per_record.jsonl and the submission file: `vid` is the annotation's own video id
    (QVHighlights' `vid`), else the video file's stem."""
    raw = getattr(r, "raw", None)
    vid = raw.get("vid") if isinstance(raw, dict) and isinstance(raw.get("vid"), str) else Path(str(r.video)).stem
    return {"where": query_where(r), "video": r.video, "vid": vid, "query": r.question, "qid": getattr(r, "qid", None)}


def query_positives(r: Any, timestamps: Sequence[float]) -> list[int]:
    if r.clip_num is not None:
        return sorted(set(int(c) for c in r.clip_num))
    return positives_from_moments(r.moments or [], timestamps)
