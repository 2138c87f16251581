"""Moments from per-frame relevance: `[[start_s, end_s, score], ...]`, several per query, best first.

The per-frame scores are the saliency (highlight) curve; this module turns them into moments with one rule, used
by every path (in-process, served, batch, eval), so a moment never depends on where it was computed:

1. Frame spans: sampled frame i covers [t_i, t_{i+1}); the last one covers one median frame gap, or ends at the
   video's duration when the caller knows it (every output that knows it passes it: no moment then lies outside
   [0, duration]). Moments are unions of whole spans.
2. Levels: for each relative threshold r in `thresholds`, level = lo + r * (hi - lo), where lo and hi are the
   lowest and highest score of this video. Relative, so a model whose scores sit in a narrow band and a calibrated
   one are cut the same way.
3. Runs: at each level, the maximal runs of consecutive frames scoring >= level; runs separated by at most
   `min_gap_s` seconds of lower frames are one moment (a short dip does not split an event).
4. Score: a moment's score is the mean score of the frames it covers (in [0, 1], the scores' own scale).
5. NMS: candidates from all levels, by score descending (ties: earlier, then shorter), greedily; a candidate whose
   temporal IoU with a kept moment is above `nms_iou` is dropped. The first `max_moments` are returned.

Several levels give nested candidates around each peak (a wide one at the low level, tighter ones above it), so
the top moment is the best-scoring extent and the next ones are other events or other extents of it
(temporal actionness grouping, Zhao et al., ICCV 2017, proposes segments the same way).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from videoitg.errors import InputError


class Moment(NamedTuple):
    start: float  # seconds
    end: float
    score: float

    def round(self, time_digits: int = 3, score_digits: int = 4) -> list[float]:
        return [round(self.start, time_digits), round(self.end, time_digits), round(self.score, score_digits)]


@dataclass(frozen=True)
class MomentParams:
    """The moment rule's parameters (module docstring). The defaults were chosen on held-out synthetic clips
    (`benchmarks/model/bench_moments.py`, results in benchmarks/RESULTS.md)."""

    thresholds: tuple[float, ...] = (0.3, 0.5, 0.7)  # relative levels in [0, 1) of the video's score range
    min_gap_s: float = 1.0  # runs at most this far apart are one moment
    nms_iou: float = 0.5  # drop a candidate overlapping a better moment by more than this IoU
    max_moments: int = 5  # moments returned per query

    def __post_init__(self) -> None:
        if not self.thresholds or not all(0.0 <= float(r) < 1.0 for r in self.thresholds):
            raise InputError(f"moment thresholds must be in [0, 1), got {self.thresholds!r}")
        if not self.min_gap_s >= 0:
            raise InputError(f"moment min_gap_s must be >= 0, got {self.min_gap_s!r}")
        if not 0.0 <= self.nms_iou <= 1.0:
            raise InputError(f"moment nms_iou must be in [0, 1], got {self.nms_iou!r}")
        if isinstance(self.max_moments, bool) or not isinstance(self.max_moments, int) or self.max_moments < 1:
            raise InputError(f"max_moments must be an int >= 1, got {self.max_moments!r}")

    def to_parameters(self) -> dict[str, str]:
        """String form (Triton model-config parameters, `moment_*` keys); `from_mapping` reads it back."""
        return {"moment_thresholds": ",".join(f"{r:g}" for r in self.thresholds),
                "moment_min_gap_s": f"{self.min_gap_s:g}", "moment_nms_iou": f"{self.nms_iou:g}",
                "moment_max": str(self.max_moments)}

    @classmethod
    def from_mapping(cls, values: Mapping[str, str]) -> MomentParams:
        """`moment_*` string parameters over the defaults (absent or empty: the default)."""
        d = cls()
        kw: dict[str, object] = {}
        try:
            if values.get("moment_thresholds", "").strip():
                kw["thresholds"] = tuple(float(x) for x in values["moment_thresholds"].split(",") if x.strip())
            if values.get("moment_min_gap_s", "").strip():
                kw["min_gap_s"] = float(values["moment_min_gap_s"])
            if values.get("moment_nms_iou", "").strip():
                kw["nms_iou"] = float(values["moment_nms_iou"])
            if values.get("moment_max", "").strip():
                kw["max_moments"] = int(values["moment_max"])
        except ValueError as e:
            raise InputError(f"bad moment parameter: {e}") from None
        return cls(**{f.name: kw.get(f.name, getattr(d, f.name)) for f in fields(cls)})


DEFAULT_PARAMS = MomentParams()


def known_duration(duration: float | None) -> float | None:
    """A video's duration in seconds when it is a usable one (finite, > 0); None otherwise (not read, or a
    container that states 0)."""
    if duration is None or isinstance(duration, bool):
        return None
    d = float(duration)
    return d if math.isfinite(d) and d > 0 else None


def frames_duration(frames: Any) -> float | None:
    """The decoded video's duration in seconds as its container states it (`SampledFrames.info.duration_s`), None
    where it was not read or is not usable (`known_duration`)."""
    return known_duration(getattr(getattr(frames, "info", None), "duration_s", None))


def frame_spans(timestamps: Sequence[float], duration: float | None = None) -> list[tuple[float, float]]:
    """Each sampled frame covers [its time, next frame's time); the last one ends one median frame gap after its
    start (1 s for a single frame), or at `duration` when that is given and later than the last frame. With a
    `duration`, every span lies inside [0, duration] (a frame stamped at or past the end covers nothing)."""
    t = [float(x) for x in timestamps]
    if not t:
        return []
    duration = known_duration(duration)
    gap = statistics.median(t[i + 1] - t[i] for i in range(len(t) - 1)) if len(t) > 1 else 1.0
    end = duration if duration is not None and duration > t[-1] else t[-1] + gap
    spans = [(t[i], t[i + 1] if i + 1 < len(t) else end) for i in range(len(t))]
    if duration is None:
        return spans
    return [(min(max(a, 0.0), duration), min(max(b, 0.0), duration)) for a, b in spans]


def temporal_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two [start, end] intervals (seconds); 0 when they do not overlap or both are empty."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def _runs(scores: Sequence[float], level: float, spans: list[tuple[float, float]], min_gap_s: float):
    """(first, last) frame positions of the runs scoring >= level, runs at most min_gap_s apart merged."""
    out: list[list[int]] = []
    for i, s in enumerate(scores):
        if s < level:
            continue
        if out and (out[-1][1] == i - 1 or spans[i][0] - spans[out[-1][1]][1] <= min_gap_s + 1e-9):
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def find_moments(scores: Sequence[float], timestamps: Sequence[float], params: MomentParams = DEFAULT_PARAMS,
                 duration: float | None = None) -> list[Moment]:
    """The moments of one query (module docstring), best first; at most `params.max_moments`."""
    if len(scores) != len(timestamps):
        raise ValueError(f"{len(scores)} scores for {len(timestamps)} timestamps")
    if not scores:
        return []
    s = [float(x) for x in scores]
    spans = frame_spans(timestamps, duration)
    lo, hi = min(s), max(s)
    seen: set[tuple[int, int]] = set()
    cands: list[tuple[Moment, int, int]] = []
    for r in sorted(set(params.thresholds)):
        level = lo + r * (hi - lo) if hi > lo else lo  # a flat curve: one moment, the whole video
        for a, b in _runs(s, level, spans, params.min_gap_s):
            if (a, b) not in seen:
                seen.add((a, b))
                cands.append((Moment(spans[a][0], spans[b][1], sum(s[a:b + 1]) / (b - a + 1)), a, b))
    cands.sort(key=lambda c: (-c[0].score, c[1], c[2]))
    kept: list[Moment] = []
    for m, _, _ in cands:
        if all(temporal_iou(m, k) <= params.nms_iou for k in kept):
            kept.append(m)
            if len(kept) == params.max_moments:
                break
    return kept
