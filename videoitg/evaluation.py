"""Grounding metrics: frame recall/precision@K and AP against a uniform baseline, moment retrieval (R1, R5, mIoU,
QVHighlights' MR-mAP) and highlight detection (HL-mAP, HL-HIT@1); definitions and tie rules in docs/evaluation.md
("Metrics")."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from videoitg.annotations import QVH_CLIP_S, clip_count
from videoitg.batch.grouping import group_by_video
from videoitg.decode import probe_video
from videoitg.errors import InputError, VideoITGError
from videoitg.jsonio import JSONProblem, loads, text_lines
from videoitg.moments import (
    DEFAULT_PARAMS,
    Moment,
    MomentParams,
    find_moments,
    frame_spans,
    known_duration,
    temporal_iou,
)
from videoitg.sampling import sample_frame_indices

DEFAULT_KS = (8, 16, 32)
R1_THRESHOLDS = (0.3, 0.5, 0.7)
R5_THRESHOLDS = (0.5, 0.7)


def ranking(scores: Sequence[float] | np.ndarray) -> np.ndarray:
    """Frame positions ordered by score, highest first; ties keep the earlier frame first."""
    s = np.asarray(scores, dtype=np.float64)
    return np.argsort(-s, kind="stable")


def recall_at_k(order: Sequence[int] | np.ndarray, positives: Iterable[int], k: int) -> float:
    pos = set(int(p) for p in positives)
    if not pos:
        raise ValueError("recall is undefined without positives")
    top = set(int(i) for i in list(order)[:k])
    return len(top & pos) / len(pos)


def precision_at_k(order: Sequence[int] | np.ndarray, positives: Iterable[int], k: int) -> float:
    pos = set(int(p) for p in positives)
    top = [int(i) for i in list(order)[:k]]
    if not top:
        raise ValueError("precision@K needs K >= 1 and at least one frame")
    return sum(i in pos for i in top) / len(top)


def average_precision(order: Sequence[int] | np.ndarray, positives: Iterable[int]) -> float:
    pos = set(int(p) for p in positives)
    if not pos:
        raise ValueError("AP is undefined without positives")
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if int(i) in pos:
            hits += 1
            total += hits / rank
    return total / len(pos)


def uniform_indices(num_frames: int, k: int) -> list[int]:
    """K frames spread evenly over T (segment centres); all frames when K >= T."""
    if k >= num_frames:
        return list(range(num_frames))
    return [int((i + 0.5) * num_frames / k) for i in range(k)]


# ---- moments and highlights ------------------------------------------------------------------------------
def positive_moments(
    positives: Iterable[int], timestamps: Sequence[float], duration: float | None = None
) -> list[tuple[float, float]]:
    """Ground-truth moments from positive frame positions: contiguous runs, with the frames' spans."""
    spans = frame_spans(timestamps, duration)
    pos = sorted(set(int(p) for p in positives))
    out: list[tuple[float, float]] = []
    for p in pos:
        if out and p - 1 in pos:
            out[-1] = (out[-1][0], spans[p][1])
        else:
            out.append(spans[p])
    return out


def positives_from_moments(moments: Iterable[Sequence[float]], timestamps: Sequence[float]) -> list[int]:
    """Sampled-frame positions whose timestamp lies inside any [start, end) moment."""
    ms = [(float(a), float(b)) for a, b in moments]
    return [i for i, t in enumerate(timestamps) if any(a <= t < b for a, b in ms)]


def best_iou(moment: Sequence[float], truth: Sequence[Sequence[float]]) -> float:
    """IoU of a predicted moment with the ground-truth window it matches best."""
    return max((temporal_iou(moment, g) for g in truth), default=0.0)


MR_IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5:0.05:0.95
MR_MAX_PREDICTIONS = 10  # moments per query that MR-mAP counts (the first ones, as submitted)
# Ground-truth window length buckets in seconds, (lo, hi]: QVHighlights' short / middle / long.
LENGTH_BUCKETS = {"short": (0.0, 10.0), "middle": (10.0, 30.0), "long": (30.0, 150.0)}


def overlap_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Temporal IoU with the union as |a| + |b| - |a ∩ b| (how MR-mAP's matching computes it; equal to
    `temporal_iou` up to rounding); 0 when the union is empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def detection_ap(pred: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], iou: float) -> float:
    """AP of one query's predicted moments `[start, end, score]` against its ground-truth windows at IoU threshold
    `iou` (docs/evaluation.md, MR-mAP). 0 without predictions or windows."""
    if not pred or not truth:
        return 0.0
    order = sorted(range(len(pred)), key=lambda i: -float(pred[i][2]))  # stable: tied scores keep their order
    matched: set[int] = set()
    hits: list[bool] = []
    for i in order:
        ious = [overlap_iou(pred[i], g) for g in truth]
        free = [j for j in range(len(truth)) if j not in matched and ious[j] >= iou]
        if free:
            # The best overlap; equal overlaps go to the later window, as the official evaluation's order has it.
            matched.add(max(free, key=lambda j: (ious[j], j)))
        hits.append(bool(free))
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    best_after = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this rank or any later one
    return float(sum(best_after[k] for k, hit in enumerate(hits) if hit) / len(truth))


def moment_map(pred: Sequence[Sequence[float]], truth: Sequence[Sequence[float]]) -> dict[str, float]:
    """One query's MR-mAP entries: `MR-mAP@t` for each threshold, `MR-mAP` (their mean), and `MR-<bucket>-mAP` for
    each length bucket the query has a window in (absent otherwise: the bucket's mean is over those queries)."""
    pred = list(pred)[:MR_MAX_PREDICTIONS]
    aps = [detection_ap(pred, truth, t) for t in MR_IOU_THRESHOLDS]
    out = {"MR-mAP": float(np.mean(aps)), **{f"MR-mAP@{t:g}": ap for t, ap in zip(MR_IOU_THRESHOLDS, aps,
                                                                                   strict=True)}}
    for name, (lo, hi) in LENGTH_BUCKETS.items():
        inside = [g for g in truth if lo < g[1] - g[0] <= hi]
        if inside:
            out[f"MR-{name}-mAP"] = float(np.mean([detection_ap(pred, inside, t) for t in MR_IOU_THRESHOLDS]))
    return out


def interpolated_ap(y_true: Sequence[float], y_score: Sequence[float]) -> float:
    """Interpolated AP as the QVHighlights highlight evaluation computes it: 1 when every item is positive, 0 when
    none is; otherwise the mean, over the distinct recall levels r > 0 reached by thresholding at each distinct
    score, of the best precision at any recall >= r (tied scores enter together)."""
    y = np.asarray(y_true, dtype=np.float64) > 0
    s = np.asarray(y_score, dtype=np.float64)
    if y.all():
        return 1.0
    if not y.any():
        return 0.0
    thresholds = np.unique(s)[::-1]
    tp = np.array([(y & (s >= t)).sum() for t in thresholds], dtype=np.float64)
    n = np.array([(s >= t).sum() for t in thresholds], dtype=np.float64)
    recall, precision = tp / y.sum(), tp / n
    levels = sorted(set(recall[recall > 0].tolist()))
    return float(np.mean([precision[recall >= r].max() for r in levels]))


def clip_scores(scores: Sequence[float], timestamps: Sequence[float], num_clips: int) -> list[float]:
    """Per-clip saliency from per-frame scores, per QVHighlights' 2-s clip: mean of the frames whose time falls in
    [2i, 2i + 2), or, for a clip no sampled frame falls in, the score of the frame whose span covers its centre."""
    spans = frame_spans(timestamps)
    out = []
    for i in range(num_clips):
        a, b = i * QVH_CLIP_S, (i + 1) * QVH_CLIP_S
        inside = [s for s, t in zip(scores, timestamps, strict=True) if a <= t < b]
        if inside:
            out.append(float(np.mean(inside)))
            continue
        c = a + QVH_CLIP_S / 2
        j = next((k for k, (x, y) in enumerate(spans) if x <= c < y), 0 if c < spans[0][0] else len(spans) - 1)
        out.append(float(scores[j]))
    return out


def highlight_metrics(scores: Sequence[float], timestamps: Sequence[float], positives: Sequence[int],
                      saliency: Sequence[Sequence[float]] | None = None, saliency_min: float = 4) -> dict[str, float]:
    """HL-mAP and HL-HIT@1 of one query (docs/evaluation.md, "Highlight detection")."""
    if saliency is not None:
        gt = np.asarray(saliency, dtype=np.float64) >= saliency_min  # [clips, annotators]
        pred = np.asarray(clip_scores(scores, timestamps, gt.shape[0]))
        top = int(np.argmax(pred))
        return {"HL-mAP": float(np.mean([interpolated_ap(gt[:, a], pred) for a in range(gt.shape[1])])),
                "HL-HIT@1": float(gt[top].any())}
    y = np.zeros(len(scores))
    y[list(positives)] = 1.0
    return {"HL-mAP": interpolated_ap(y, scores), "HL-HIT@1": float(y[int(ranking(scores)[0])] > 0)}


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


# ---- scoring annotated data with a model, or reading predictions ------------------------------------------
def _where(r) -> str:
    w = getattr(r, "where", "")
    return w() if callable(w) else str(w)


def _info(r) -> dict:
    """What identifies a query in per_record.jsonl and the submission file: `vid` is the annotation's own video id
    (QVHighlights' `vid`), else the video file's stem."""
    raw = getattr(r, "raw", None)
    vid = raw.get("vid") if isinstance(raw, dict) and isinstance(raw.get("vid"), str) else Path(str(r.video)).stem
    return {"where": _where(r), "video": r.video, "vid": vid, "query": r.question, "qid": getattr(r, "qid", None)}


def _positives(r, timestamps: Sequence[float]) -> list[int]:
    if r.clip_num is not None:
        return sorted(set(int(c) for c in r.clip_num))
    return positives_from_moments(r.moments or [], timestamps)


BATCH_INSTRUCTIONS = 16  # a video's queries scored in one padded forward


def score_records(
    scorer,
    records: Sequence,
    video_root,
    batch_instructions: int = BATCH_INSTRUCTIONS,
    progress: bool = False,
) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    """Score annotation records (`videoitg.annotations.EvalRecord` or `train.data.GroundingRecord`) with a
    `videoitg.pipeline.Scorer` (its sampling, decoder and limits). Each video is decoded and encoded once
    (`Scorer.stream_features`, as batch scoring does); its queries are scored in padded batches.
    Returns the scored records and the ones that could not be used (with the reason)."""

    by_video = group_by_video(records)
    scored: list[RecordScores] = []
    bad: list[tuple[object, str]] = []
    it = by_video.items()
    if progress:
        it = tqdm(list(it), desc="eval videos", unit="video")
    for video, recs in it:
        try:
            feats = scorer.stream_features(Path(video_root) / video)
        except VideoITGError as e:
            bad += [(r, f"unreadable video: {e}") for r in recs]
            continue
        T = len(feats.frame_indices)
        usable = []
        for r in recs:
            pos = _positives(r, feats.timestamps)
            if not pos:
                bad.append((r, "no positive frame among the sampled frames"))
            elif max(pos) >= T or min(pos) < 0:
                bad.append((r, f"clip_num out of range: the video has {T} sampled frames"))
            else:
                usable.append((r, pos))
        for i in range(0, len(usable), batch_instructions):
            chunk = usable[i : i + batch_instructions]
            try:
                results = scorer.score_visual([(feats, r.question) for r, _ in chunk], video=video)
            except VideoITGError as e:
                bad += [(r, str(e)) for r, _ in chunk]
                continue
            for (r, pos), res in zip(chunk, results, strict=True):
                duration = getattr(r, "duration", None) or feats.duration
                scored.append(RecordScores(res.scores, pos, res.timestamps, r.kind, r.moments, duration,
                                           getattr(r, "saliency", None), _info(r), order=res.ranking))
    return scored, bad


def _prediction_key(video: str, query: str) -> tuple[str, str]:
    # Stem: QVHighlights / Charades name videos without an extension; results.jsonl holds the file path.
    return Path(str(video)).stem, str(query).strip()


@dataclass
class Prediction:
    """One results.jsonl line, checked: chronological frame numbers and scores (and seconds, when the line has
    them), the line's own ranking (`index`) when it is a list of frame numbers."""

    line: int
    raw: dict
    scores: list[float]
    frames: list[int]
    timestamps: list[float] | None
    index: list[int] | None


def _numbers(value: object, kind: type, name: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{name}' must be a list, got {type(value).__name__}")
    for x in value:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise ValueError(f"'{name}' must hold finite numbers, got {x!r}")
        if kind is int and x != int(x):
            raise ValueError(f"'{name}' must hold frame numbers, got {x!r}")
    return [kind(x) for x in value]


def _prediction(n: int, p: object) -> Prediction:
    """ValueError naming the problem when a results line cannot be evaluated."""
    if not isinstance(p, dict):
        raise ValueError("line is not a JSON object")
    index = _numbers(p["index"], int, "index") if isinstance(p.get("index"), list) else None
    if all(k in p for k in ("scores", "frame_indices", "timestamps")):
        scores = _numbers(p["scores"], float, "scores")
        frames = _numbers(p["frame_indices"], int, "frame_indices")
        ts = _numbers(p["timestamps"], float, "timestamps")
        if not len(scores) == len(frames) == len(ts):
            raise ValueError(f"'scores', 'frame_indices' and 'timestamps' differ in length ({len(scores)}, "
                             f"{len(frames)}, {len(ts)})")
        return Prediction(n, p, scores, frames, ts, index)
    if "index" not in p or "logits" not in p:
        raise ValueError("needs 'scores', 'frame_indices' and 'timestamps', or 'index' and 'logits'")
    logits = _numbers(p["logits"], float, "logits")
    if index is None or len(index) != len(logits):
        raise ValueError("'index' and 'logits' must be lists of the same length")
    pairs = sorted(zip(index, logits, strict=True))
    return Prediction(n, p, [s for _, s in pairs], [f for f, _ in pairs], None, index)


def _stated_duration(value: object) -> float | None:
    return known_duration(value) if isinstance(value, (int, float)) else None


def read_predictions(results_path) -> dict[tuple[str, str], Prediction]:
    """(video file stem, instruction) -> the first prediction for it in a results.jsonl. InputError "FILE:LINE:
    problem" for a line that is not UTF-8, not JSON (a truncated write) or not a usable record: scores from a
    damaged file are not evaluated."""
    preds: dict[tuple[str, str], Prediction] = {}
    try:
        lines = list(text_lines(results_path))
    except OSError as e:
        raise InputError(f"results file {results_path}: cannot be read ({e.strerror or e})") from None
    for n, line, problem in lines:
        try:
            if problem is not None:
                raise ValueError(problem)
            p = _prediction(n, loads(line))
        except (JSONProblem, ValueError) as e:
            raise InputError(f"{results_path}:{n}: {e}") from None
        key = _prediction_key(p.raw.get("video_path", ""), p.raw.get("contexts", ""))
        preds.setdefault(key, p)  # first wins, as downstream readers take it
    return preds


def records_from_results(results_path, records: Sequence, video_root=None, sampling=None, probe=None
                         ) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    """Evaluate precomputed predictions (results.jsonl from `videoitg score` / `batch` / serving, or the upstream
    writer's `index` + `logits` records): match each annotation record by (video file stem, instruction).

    Times: our records carry `timestamps`; upstream records only frame numbers (`index`), which are turned into
    seconds with the video's real frame rate (probed from the video file; refused, naming the file, when it cannot
    be read). Positions: clip_num positions index the annotation's sampling (`sampling`, the training rule for
    VideoITG-40K), so a prediction made with other sampling (another rule, rate or frame cap) is refused with the
    frame counts of both instead of being scored against the wrong frames.
    """
    probe = probe or probe_video
    preds = read_predictions(results_path)
    infos: dict[str, object] = {}

    def video_info(p: dict, r):
        """(VideoInfo, None) or (None, why not) for the prediction's video (its path, else under video_root)."""
        cands = [Path(str(p["video_path"]))] if p.get("video_path") else []
        if video_root is not None:
            cands.append(Path(video_root) / r.video)
        path = next((c for c in cands if c.is_file()), None)
        if path is None:
            return None, f"video {' or '.join(str(c) for c in cands) or r.video} not found"
        if str(path) not in infos:
            try:
                infos[str(path)] = probe(path)
            except VideoITGError as e:
                infos[str(path)] = f"video {path} cannot be read ({e})"
        got = infos[str(path)]
        return (None, got) if isinstance(got, str) else (got, None)

    scored, bad = [], []
    for r in records:
        p = preds.get(_prediction_key(r.video, r.question))
        if p is None:
            bad.append((r, "no prediction for this video and instruction"))
            continue
        info = None
        if p.timestamps is not None:
            scores, frames, ts = p.scores, p.frames, p.timestamps
        else:  # only the downstream keys: index (score-descending frame numbers) + rounded sigmoid scores
            scores, frames = p.scores, p.frames
            info, why = video_info(p.raw, r)
            if info is None:
                bad.append((r, "the prediction has only frame numbers (index, logits): turning them into seconds "
                               f"needs the video's frame rate, but {why}; pass --video-root"))
                continue
            ts = [f / info.fps for f in frames]
        if r.clip_num is not None and sampling is not None:
            if info is None:
                info, why = video_info(p.raw, r)
            if info is None:
                bad.append((r, f"clip_num positions need the annotation's sampling to be checked, but {why}; "
                               "pass --video-root"))
                continue
            want = sample_frame_indices(info.total_frames, info.fps, sampling)
            if frames != want:
                bad.append((r, f"the prediction's {len(frames)} frames are not the annotation's sampling "
                               f"({sampling.rule} rule, {sampling.target_fps:g} fps, at most {sampling.num_frames} "
                               f"frames: {len(want)} frames here), so clip_num would point at other frames; score "
                               f"with --sampling {sampling.rule} --num-frames {sampling.num_frames} --target-fps "
                               f"{sampling.target_fps:g}, or evaluate with --checkpoint"))
                continue
        pos = _positives(r, ts)
        if not pos or max(pos) >= len(scores):
            bad.append((r, f"positives {pos} do not fit the prediction's {len(scores)} frames"))
            continue
        # The file's own ranking (its `index` order), which is what downstream readers take the top-K from; an
        # index that does not list every frame once is ranked by the scores instead.
        where = {f: i for i, f in enumerate(frames)}
        order = [where[f] for f in p.index if f in where] if p.index is not None else None
        if order is not None and len(order) != len(scores):
            order = None
        # The annotation's duration, else the one the record states (the container's, where it was scored), else
        # the probed video's.
        duration = (getattr(r, "duration", None) or _stated_duration(p.raw.get("duration"))
                    or (info.duration_s if info is not None else None))
        scored.append(RecordScores(scores, pos, ts, r.kind, r.moments, duration, getattr(r, "saliency", None),
                                   _info(r), order=order))
    return scored, bad
