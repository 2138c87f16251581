"""How a soak (`benchmarks.serving.soak`) is judged, on its records alone: no request lost or answered wrong, errors
only while a killed stub is repaired and each naming the step, the memory of every process flat over the last
20 minutes (each process's life read apart: a stub killed starts again small), the p99 of the last 10 minutes within
1.2x of the first. Kept apart from the run so the suite checks the rules on numbers (tests/benchmarks/test_soak.py)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

MEMORY_GROWTH = 0.05  # at most, over the last MEMORY_SPAN_S
MEMORY_SPAN_S = 20 * 60.0
MEMORY_SAMPLE_S = 120.0  # each end of that span: the median of this long
MIN_LIFE_S = 8 * 60.0  # a process's life read over less than this within the span is not judged
WARM_S = 5 * 60.0  # a process started during the soak (a stub killed) warms up (its cache fills) this long first
P99_RATIO = 1.2  # last P99_SPAN_S against the first
P99_SPAN_S = 10 * 60.0
REPAIR_GRACE_S = 5.0  # after readiness is back: requests sent before it may still be answered with the error
QUIET_AFTER_REPAIR_S = 30.0  # p99_windows: after readiness is back, the retries and backlog of a repair drain
# What an error of a repair names: the step that could not answer, or the model whose process died with it; during
# a restart of tritonserver by supervision, tritonserver (the front answers for it).
STEP_NAMED = re.compile(r"\bvideoitg(_decode|_vision|_grounding|_select)?\b")
SERVER_NAMED = re.compile(r"\btritonserver\b")


@dataclass(frozen=True)
class Attempt:
    """One try of one request: when it was sent and answered (seconds from the soak's start), its kind, and how it
    went: 'ok', 'wrong' (answered, not what the in-process scorer gives) or 'error' (with the server's text)."""

    kind: str
    sent: float
    done: float
    outcome: str
    text: str = ""

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass
class Verdict:
    """Each goal: met or not, with the figures read against it."""

    goals: dict[str, bool] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def met(self) -> bool:
        return all(self.goals.values())


def during_repair(a: Attempt, windows: Iterable[tuple[float, float]], grace_s: float = REPAIR_GRACE_S) -> bool:
    """Whether attempt `a` was in flight during a repair window (from a kill to readiness back, plus `grace_s`)."""
    return any(a.sent <= end + grace_s and a.done >= start for start, end in windows)


def by_text(errors: Sequence[Attempt]) -> dict[str, int]:
    """How many errors said each text (request ids and numbers left out), most frequent first."""
    texts = Counter(re.sub(r"\d+", "N", re.sub(r"\[request id: [^]]*\] ", "", a.text))[:160] for a in errors)
    return dict(texts.most_common())


def p99(values: Sequence[float]) -> float:
    return float(np.percentile(values, 99)) if len(values) else float("nan")


def lives(samples: Sequence[Sequence[float]]) -> list[list[tuple[float, float]]]:
    """One role's samples, (time, bytes) or (time, bytes, pid, ...), split where its pid changes (a process killed
    and started again): its lives, each [(time, bytes)], in order. Samples without a pid are one life."""
    out: list[list[tuple[float, float]]] = []
    pid: float | None = None
    for sample in samples:
        t, v, p = sample[0], sample[1], (sample[2] if len(sample) > 2 else 0)
        if not out or p != pid:
            out.append([])
            pid = p
        out[-1].append((t, v))
    return out


def memory_growth(samples: Sequence[Sequence[float]], end: float, span_s: float = MEMORY_SPAN_S,
                  sample_s: float = MEMORY_SAMPLE_S) -> float | None:
    """Growth of one role's memory over the last `span_s` before `end`, life by life (`lives`: a process started
    again begins small, which would hide the growth of the one before it): for each life, from the later of the span's
    start and `WARM_S` after the life's own start, to its end, where that is at least `MIN_LIFE_S` long, the median
    of its last `sample_s` of samples against the median of its first, scaled to the span (a life read over 10
    minutes that grew 3 % grows 6 % a span). The largest; None where the samples do not cover the span or no life is
    read that long."""
    if not samples or samples[0][0] >= end - span_s + sample_s:
        return None  # the span is not covered
    growth: list[float] = []
    for life in lives(samples):
        start = max(end - span_s, life[0][0] + (WARM_S if life[0][0] > 0 else 0.0))
        read = [(t, v) for t, v in life if start <= t <= end]
        if not read or read[-1][0] - start < MIN_LIFE_S:
            continue
        first = [v for t, v in read if t < start + sample_s]
        last = [v for t, v in read if t > read[-1][0] - sample_s]
        growth.append((float(np.median(last)) / float(np.median(first)) - 1.0) * span_s / (read[-1][0] - start))
    return max(growth) if growth else None


def judge(attempts: Sequence[Attempt], lost: int, windows: Sequence[tuple[float, float]],
          memory: dict[str, Sequence[Sequence[float]]], duration_s: float,
          restarts: Sequence[tuple[float, float]] = ()) -> Verdict:
    """The soak's verdict: `attempts` every try made, `lost` the requests never answered right (a retry included),
    `windows` the repairs (start, end), `memory` each process's samples (time, bytes) over `duration_s`; `restarts`,
    those of `windows` that restarted tritonserver."""
    v = Verdict()
    wrong = [a for a in attempts if a.outcome == "wrong"]
    errors = [a for a in attempts if a.outcome == "error"]
    outside = [a for a in errors if not during_repair(a, windows)]
    unnamed = [a for a in errors if not STEP_NAMED.search(a.text)
               and not (SERVER_NAMED.search(a.text) and during_repair(a, restarts))]
    v.goals["nothing lost"] = lost == 0
    v.goals["nothing answered wrong"] = not wrong
    v.goals["errors only during repairs"] = not outside
    v.goals["each error names the step"] = not unnamed
    v.figures.update(requests=sum(a.outcome == "ok" for a in attempts), errors=len(errors), wrong=len(wrong),
                     lost=lost, errors_outside_n=len(outside), errors_outside=[asdict(a) for a in outside[:5]],
                     errors_unnamed=[asdict(a) for a in unnamed[:5]], errors_by_text=by_text(errors))
    growth = {name: memory_growth(s, duration_s) for name, s in memory.items()}
    measured = {k: g for k, g in growth.items() if g is not None}
    v.goals["memory flat"] = bool(measured) and all(g <= MEMORY_GROWTH for g in measured.values())
    v.figures["memory_growth"] = growth
    ok = [a for a in attempts if a.outcome == "ok"]
    first = p99([a.latency for a in ok if a.sent < P99_SPAN_S])
    last = p99([a.latency for a in ok if a.sent >= duration_s - P99_SPAN_S])
    v.goals["p99 steady"] = bool(np.isfinite(first) and np.isfinite(last) and last <= P99_RATIO * first)
    v.figures.update(p99_first_s=first, p99_last_s=last, p99_ratio=last / first if first else float("nan"),
                     p99_windows=p99_windows(ok, windows, duration_s))
    return v


def p99_windows(ok: Sequence[Attempt], windows: Sequence[tuple[float, float]], duration_s: float,
                grace_s: float = QUIET_AFTER_REPAIR_S) -> dict[str, dict[str, list[float]]]:
    """Where the p99 goal's two windows differ (figures, not a goal): each window's p99 [first, last] by kind, and
    over the requests in flight at no repair (from a kill to `grace_s` after readiness back)."""
    def both(keep: Callable[[Attempt], bool]) -> list[float]:
        return [p99([a.latency for a in ok if keep(a) and a.sent < P99_SPAN_S]),
                p99([a.latency for a in ok if keep(a) and a.sent >= duration_s - P99_SPAN_S])]

    kinds = sorted({a.kind for a in ok})
    return {"by_kind": {k: both(lambda a, k=k: a.kind == k) for k in kinds},
            "outside_repairs": {"all": both(lambda a: not during_repair(a, windows, grace_s))}}


def cpu_shares(samples: Sequence[Sequence[float]], start: float, end: float) -> dict[str, float]:
    """The machine's CPU between `start` and `end` from cumulative /proc/stat samples (time, busy, steal, total
    jiffies): the share busy (this soak's processes and anything else on the machine) and the share stolen by the
    host for other guests. A p99 that moves while these move is the machine's, not the server's."""
    inside = [x for x in samples if start <= x[0] <= end]
    if len(inside) < 2 or inside[-1][3] <= inside[0][3]:
        return {}
    total = inside[-1][3] - inside[0][3]
    return {"busy": (inside[-1][1] - inside[0][1]) / total, "steal": (inside[-1][2] - inside[0][2]) / total}


def cpu_by_process(samples: dict[str, Sequence[Sequence[float]]], machine: Sequence[Sequence[float]], start: float,
                   end: float, tick_s: float) -> dict[str, float]:
    """Cores each process used on average between `start` and `end`, from its cumulative CPU seconds sampled as
    (time, seconds, pid): life by life (a process started again within the span counts from its birth: its start
    is part of the repair's cost). "rest of the machine": the machine's busy time (`machine`, /proc/stat samples of
    `tick_s` seconds a jiffy) less theirs, anything else that ran (the batch run's process, the kernel, other
    work on the machine). A p99 that moves with "rest of the machine" is not the server's."""
    inside_m = [x for x in machine if start <= x[0] <= end]
    if len(inside_m) < 2:
        return {}
    span = inside_m[-1][0] - inside_m[0][0]  # the time sampled: the soak may end before `end`
    out: dict[str, float] = {}
    for role, role_samples in samples.items():
        used = 0.0
        for n, life in enumerate(lives(role_samples)):
            inside = [v for t, v in life if start <= t <= end]
            if inside:
                used += inside[-1] - inside[0] + (inside[0] if n and life[0][0] >= start else 0.0)
        out[role] = used / span
    out["rest of the machine"] = (inside_m[-1][1] - inside_m[0][1]) * tick_s / span - sum(out.values())
    return out


def window_median(samples: Sequence[tuple[float, float]], start: float, end: float) -> float:
    """The median of the (time, value) samples between `start` and `end` (NaN where none)."""
    inside = [v for t, v in samples if start <= t <= end]
    return float(np.median(inside)) if inside else float("nan")
