"""Grounding metrics: frame recall/precision@K and AP against a uniform baseline, moment retrieval (R1, R5, mIoU,
QVHighlights' MR-mAP) and highlight detection (HL-mAP, HL-HIT@1); definitions and tie rules in docs/evaluation.md
("Metrics"). Pure functions of scores, frame positions and seconds: numpy and the core's moment rule only."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from videoitg.moments import frame_spans, temporal_iou

QVH_CLIP_S = 2.0  # QVHighlights annotates saliency per 2-second clip
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


def clip_count(duration: float) -> int:
    """2-second clips of a video of `duration` seconds, as the QVHighlights evaluation counts them (whole clips:
    int(duration / 2)), at least one."""
    return max(int(duration / QVH_CLIP_S), 1)
