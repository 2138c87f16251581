"""Grounding metrics: frame-level recall/precision@K and AP, moment-level R1@IoU and mIoU, and a uniform
sampling baseline at the same K.

Conventions (also in docs/training.md):
- Scores rank the T sampled frames of a video; ties are broken by the lower frame position (stable sort), so
  every metric is deterministic. A record scored by a model carries the order of its ranking rule
  (videoitg.outputs: "released" by default); one read from a results.jsonl, the file's own `index` order.
- K larger than T selects all T frames; precision@K divides by min(K, T), the number of frames selected.
- "K = #positives" (R-precision) uses K = |P|, so recall equals precision there.
- AP = mean over positives of the precision at the rank of that positive (standard non-interpolated AP).
- Uniform baseline: K frames at the centres of K equal parts of the T sampled frames,
  floor((i + 0.5) * T / K).
- Moment from scores (the segment rule): take the highest-scoring frame, grow it left and right while the
  neighbouring frames score >= `threshold` (probabilities, default 0.5). The moment spans from the start time
  of its first frame to the start time of the frame after its last (the last frame ends at the video's end).
  R1@m = share of records whose predicted moment has IoU >= m with the best-matching ground-truth moment;
  mIoU = mean of that IoU.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_KS = (8, 16, 32)
IOU_THRESHOLDS = (0.3, 0.5, 0.7)


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


# ---- moments ----------------------------------------------------------------------------------------------
def frame_spans(timestamps: Sequence[float], duration: float | None = None) -> list[tuple[float, float]]:
    """Each sampled frame covers [its time, next frame's time); the last one ends at `duration` (or one median
    frame gap after its start when the duration is unknown)."""
    t = [float(x) for x in timestamps]
    if not t:
        return []
    gap = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    end = duration if duration is not None and duration > t[-1] else t[-1] + gap
    return [(t[i], t[i + 1] if i + 1 < len(t) else end) for i in range(len(t))]


def predicted_moment(
    scores: Sequence[float],
    timestamps: Sequence[float],
    threshold: float = 0.5,
    duration: float | None = None,
    top: int | None = None,
) -> tuple[float, float]:
    """The segment rule (module docstring): the run around the top frame (`top`, default the highest score)
    whose scores stay >= threshold."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size == 0:
        raise ValueError("no frames")
    top = int(ranking(s)[0]) if top is None else top
    lo = hi = top
    while lo - 1 >= 0 and s[lo - 1] >= threshold:
        lo -= 1
    while hi + 1 < s.size and s[hi + 1] >= threshold:
        hi += 1
    spans = frame_spans(timestamps, duration)
    return spans[lo][0], spans[hi][1]


def positive_moments(
    positives: Iterable[int], timestamps: Sequence[float], duration: float | None = None
) -> list[tuple[float, float]]:
    """Ground-truth moments from positive frame positions: contiguous runs, with the same frame spans."""
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


def temporal_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


# ---- aggregation ------------------------------------------------------------------------------------------
@dataclass
class RecordScores:
    """One evaluated instruction: scores over T sampled frames and its ground truth."""

    scores: Sequence[float]
    positives: Sequence[int]
    timestamps: Sequence[float]
    kind: str = "all"
    moments: Sequence[Sequence[float]] | None = None  # ground-truth [start, end] seconds; else from positives
    duration: float | None = None
    order: Sequence[int] | None = None  # positions best first (a ranking rule's); None: by score, stable


@dataclass
class Summary:
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> metric -> value
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"counts": self.counts, "metrics": self.rows}


def record_metrics(
    r: RecordScores, ks: Sequence[int] = DEFAULT_KS, threshold: float = 0.5
) -> dict[str, float]:
    """All metrics of one record (model and uniform baseline)."""
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
    if r.moments:
        gt = [(float(a), float(b)) for a, b in r.moments]
    else:
        gt = positive_moments(pos, r.timestamps, r.duration)
    pred = predicted_moment(r.scores, r.timestamps, threshold, r.duration, top=int(order[0]))
    iou = max(temporal_iou(pred, g) for g in gt)
    m["mIoU"] = iou
    for th in IOU_THRESHOLDS:
        m[f"R1@{th}"] = float(iou >= th)
    return m


def summarize(
    records: Iterable[RecordScores], ks: Sequence[int] = DEFAULT_KS, threshold: float = 0.5
) -> Summary:
    """Mean of every metric per instruction kind and over all records ("all")."""
    per: dict[str, list[dict[str, float]]] = {}
    for r in records:
        m = record_metrics(r, ks, threshold)
        per.setdefault("all", []).append(m)
        if r.kind != "all":
            per.setdefault(r.kind, []).append(m)
    out = Summary()
    for group, ms in per.items():
        out.counts[group] = len(ms)
        out.rows[group] = {key: float(np.mean([x[key] for x in ms])) for key in ms[0]}
    return out


def format_table(summary: Summary, ks: Sequence[int] = DEFAULT_KS) -> str:
    """A plain-text table: one row per group for the model and one for uniform sampling at the same K."""
    cols = ["recall@#pos"] + [f"recall@{k}" for k in ks] + [f"precision@{k}" for k in ks]
    cols += ["AP", "R1@0.3", "R1@0.5", "R1@0.7", "mIoU"]
    header = f"{'group':<16}{'method':<9}{'n':>6}" + "".join(f"{c:>13}" for c in cols)
    lines = [header, "-" * len(header)]
    for group in sorted(summary.rows, key=lambda g: (g != "all", g)):
        row, n = summary.rows[group], summary.counts[group]
        for method in ("model", "uniform"):
            vals = []
            for c in cols:
                key = c if method == "model" else f"uniform_{c}"
                v = row.get(key)
                vals.append(f"{v:>13.3f}" if v is not None and not math.isnan(v) else f"{'-':>13}")
            lines.append(f"{group:<16}{method:<9}{n:>6}" + "".join(vals))
    return "\n".join(lines)


# ---- scoring annotated data with a model ------------------------------------------------------------------
def score_records(
    scorer,
    records: Sequence,
    video_root,
    load_frames,
    batch_instructions: int = 16,
    progress: bool = False,
) -> tuple[list[RecordScores], list[tuple[object, str]], list[dict]]:
    """Score annotation records (train.data.GroundingRecord) with a `videoitg.pipeline.Scorer`.

    Each video is decoded and encoded once; its instructions are scored in padded batches. Returns the
    scored records, the records that could not be used (with the reason) and one dict per scored record
    (instruction, positives, scores) for a per-record log.
    """
    from pathlib import Path

    from videoitg.errors import VideoITGError

    by_video: dict[str, list] = {}
    for r in records:
        by_video.setdefault(r.video, []).append(r)
    scored: list[RecordScores] = []
    bad: list[tuple[object, str]] = []
    rows: list[dict] = []
    it = by_video.items()
    if progress:
        from tqdm import tqdm

        it = tqdm(list(it), desc="eval videos", unit="video")
    for video, recs in it:
        try:
            frames = load_frames(Path(video_root) / video)
            feats = scorer.video_features(frames)
        except VideoITGError as e:
            bad += [(r, f"unreadable video: {e}") for r in recs]
            continue
        T = len(frames.frame_indices)
        usable = []
        for r in recs:
            pos = _positives(r, frames.timestamps)
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
                duration = getattr(frames, "duration", None)
                scored.append(RecordScores(res.scores, pos, res.timestamps, r.kind, r.moments, duration,
                                           order=res.ranking))
                rows.append({"video": video, "question": r.question, "type": r.kind, "positives": pos,
                             "scores": [round(s, 5) for s in res.scores]})
    return scored, bad, rows


def _positives(r, timestamps: Sequence[float]) -> list[int]:
    if r.clip_num is not None:
        return sorted(set(int(c) for c in r.clip_num))
    return positives_from_moments(r.moments or [], timestamps)


def records_from_results(results_path, records: Sequence) -> tuple[list[RecordScores], list[tuple[object, str]]]:
    """Evaluate precomputed predictions (results.jsonl from `videoitg score`/serving): match each annotation
    record by (video file name, instruction). Positions are those of the prediction's sampled frames, so the
    predictions must use the annotation's sampling (1 fps; identical for videos up to num_frames seconds)."""
    import json
    from pathlib import Path

    preds: dict[tuple[str, str], dict] = {}
    for line in Path(results_path).read_text().splitlines():
        if line.strip():
            p = json.loads(line)
            key = (Path(str(p.get("video_path", ""))).name, str(p.get("contexts", "")).strip())
            preds.setdefault(key, p)  # first occurrence wins, as the downstream readers do
    scored, bad = [], []
    for r in records:
        p = preds.get((Path(r.video).name, r.question.strip()))
        if p is None:
            bad.append((r, "no prediction for this video and instruction"))
            continue
        if "scores" in p and "frame_indices" in p:
            scores, ts = p["scores"], p.get("timestamps") or list(range(len(p["scores"])))
            frames = p["frame_indices"]
        else:  # only the downstream keys: index (ranked frame numbers) + rounded sigmoid scores
            pairs = sorted(zip(p["index"], p["logits"], strict=True))
            scores, ts = [s for _, s in pairs], [float(i) for i, _ in pairs]
            frames = [i for i, _ in pairs]
        # The file's own ranking (its `index` order), which is what downstream readers take the top-K from.
        where = {f: i for i, f in enumerate(frames)}
        order = [where[f] for f in p["index"] if f in where] if isinstance(p.get("index"), list) else None
        pos = _positives(r, ts)
        if not pos or max(pos) >= len(scores):
            bad.append((r, f"positives {pos} do not fit the prediction's {len(scores)} frames"))
            continue
        if order is not None and len(order) != len(scores):
            order = None  # an index that does not list every frame once: rank by the scores instead
        scored.append(RecordScores(scores, pos, ts, r.kind, r.moments, order=order))
    return scored, bad
