"""`videoitg perf`'s measurement: perf_analyzer at each concurrency level against a running server, cold requests,
cache hits or both, each level's per-step split read from the server's statistics around it, written as perf.json
(the figures, the split, what was measured), perf.csv (perf_analyzer's rows, labelled by series) and perf.png.

Cold requests on a server with a feature cache carry each its own copy of a video (`launch.perf.distinct_copy`),
sent exactly once (perf_analyzer's `--request-count`); cache hits are measured in windows until stable. Before
measuring, each video (and instruction) is sent once: a cached series' warm-up (it fills the cache), a cold
series' first-request costs kept out of the figures, and an input the server refuses fails here, with its message.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from videoitg.contract.access import ClientAccess
from videoitg.contract.parameters import FEATURE_CACHE_BYTES
from videoitg.contract.protocol import DECODE
from videoitg.errors import InputError
from videoitg.launch import perf
from videoitg.perf import record, stats
from videoitg.writes import write_whole

MAX_INPUT_BYTES = 1 << 30  # perf_analyzer holds its whole input in memory
SERIES = ("cold", "cached")


@dataclass
class Plan:
    """What to measure: the server, the videos and instructions, the series and concurrency levels, and how."""

    server: str
    videos: list[Path]
    instructions: list[str]
    series: tuple[str, ...] = ("cold",)
    protocol: str = "grpc"
    model: str = "videoitg"
    levels: list[int] = field(default_factory=lambda: [1, 2, 3, 4])
    cold_requests: int = 16
    metrics: str | None = None
    measurement_interval_ms: int = 4000
    stability_pct: int = 50
    max_trials: int = 10
    extra: list[str] = field(default_factory=list)
    out: Path = Path("artifacts/perf")
    work: Path | None = None  # perf_analyzer's input.json and each level's CSV (default: `out`)
    access: ClientAccess = field(default_factory=ClientAccess)  # the server's key and TLS (its metrics port's TLS too)


class PerfAnalyzerFailed(Exception):
    """perf_analyzer exited with an error (its own output says why)."""

    def __init__(self, returncode: int) -> None:
        super().__init__(f"perf_analyzer exited with {returncode}")
        self.returncode = returncode


def measure(plan: Plan, device_time_s: dict[str, float] | None = None) -> dict[str, Any]:
    """Measure every series of `plan` and write perf.json, perf.csv and perf.png to `plan.out`; returns the
    report. `device_time_s`: one request's GPU time measured on the device (the GPU check's), kept beside the
    figures. Raises InputError for what cannot be measured as asked, PerfAnalyzerFailed when perf_analyzer fails."""
    from videoitg.client.kserve import VideoITGClient, protocol_mismatch
    from videoitg.perf.plot import plot

    for v in plan.videos:
        if not v.is_file():
            raise InputError(f"video {v} does not exist")
    if "cold" in plan.series and plan.cold_requests < max(plan.levels):
        raise InputError(f"--cold-requests {plan.cold_requests} is below the highest concurrency {max(plan.levels)}")
    hint = protocol_mismatch(plan.server, plan.protocol, plan.access.tls)
    if hint:
        raise InputError(hint)
    videos = perf.read_videos(plan.videos)
    metrics = plan.metrics or f"{plan.server.split('://', 1)[-1].rpartition(':')[0]}:8002"
    report: dict[str, Any] = {"series": {}}
    csv_lines: list[str] = []
    with VideoITGClient(plan.server, plan.protocol, model=plan.model, access=plan.access) as c:
        if not c.is_ready():
            raise InputError(f"no ready model {plan.model!r} at {plan.server} ({plan.protocol}): start `videoitg "
                             "serve` first")
        params = c.model_parameters()
        if FEATURE_CACHE_BYTES not in params and c.accepts_digest():  # a BLS model that did not say
            raise InputError(f"cannot read the feature-cache size of {plan.model!r} at {plan.server}: whether its "
                             "requests would be cold is unknown")
        cache_bytes = int(params.get(FEATURE_CACHE_BYTES, "0") or 0)  # an ensemble has no cache (no parameter)
        if "cached" in plan.series and not cache_bytes:
            raise InputError(f"{plan.server} serves {plan.model!r} without a feature cache (an ensemble, or "
                             "--cache-bytes 0): every request is cold; measure with --requests cold")
        shares = c.accepts_digest()  # a BLS model computes a video once for its concurrent requests, cache or not
        report["measured"] = record.measured(c, plan.server, plan.protocol, plan.model, plan.videos)
        outside = stats.decode_outside_compute(c.model_config(DECODE))
        if device_time_s:
            report["device_time_s"] = device_time_s
        run_id = os.urandom(8)  # in every copy this run makes: none is one the server saw before
        for series in plan.series:
            report["series"][series], lines = _series(plan, c, series, videos, cache_bytes, shares, metrics, run_id)
            csv_lines += [f"Series,{lines[0]}"] if not csv_lines else []
            csv_lines += [f"{series},{line}" for line in lines[1:]]
        # the split's decode is the hand-off only where the step's own times could not be read
        report["measured"]["decode_outside_compute"] = outside and not all(
            r["split"]["decode_own"] for s in report["series"].values() for r in s["rows"])
    plan.out.mkdir(parents=True, exist_ok=True)
    write_whole(plan.out / "perf.csv", "".join(csv_lines))
    write_whole(plan.out / "perf.json", json.dumps(report, indent=1) + "\n")
    plot(report, plan.out / "perf.png")
    return report


def _series(plan: Plan, c: Any, series: str, videos: list[bytes], cache_bytes: int, shares: bool, metrics: str,
            run_id: bytes) -> tuple[dict[str, Any], list[str]]:
    """One series: warm-up, then each level with its per-step split; (its report, perf_analyzer's CSV lines with
    the header first). Cold requests carry copies wherever a video's bytes could be served from another request's
    work: a feature cache, or (the BLS model) concurrent requests of one video sharing one computation."""
    copies = series == "cold" and (cache_bytes > 0 or shares)
    first = {}
    for i, data in enumerate(videos):
        for text in plan.instructions:
            first[i, text] = c.infer(data, text)
        if copies:  # the server must score a copy as the video itself, and not as a cache hit
            check = c.infer(perf.distinct_copy(data, run_id, 0, str(plan.videos[i])), plan.instructions[0])
            same = first[i, plan.instructions[0]].result
            if check.cache_hit or check.result.frame_indices != same.frame_indices or max(
                    abs(a - b) for a, b in zip(check.result.logits, same.logits, strict=True)) > 1e-4:
                raise InputError(f"{plan.videos[i]}: the server did not score a distinct copy as a new video with "
                                 "the same frames; cold requests cannot be made this way")
    if copies:
        size = sum(len(v) for v in videos) / len(videos) * plan.cold_requests * 4 / 3
        if size > MAX_INPUT_BYTES:
            raise InputError(f"{plan.cold_requests} copies of these videos make {size / 2**30:.1f} GiB of input for "
                             "perf_analyzer; lower --cold-requests, use shorter clips, or measure a deployment "
                             "without the cache (`videoitg serve --cache-bytes 0`)")
    label = series_label(series, cache_bytes, copies, plan.cold_requests)
    print(f"measuring: {label}", flush=True)
    models = (plan.model, *stats.STEPS)
    work = plan.work or plan.out  # input.json and each level's CSV (gathered into perf.csv at the end)
    tls = plan.access.ssl_context()
    before_cache = perf.cache_counts(metrics, context=tls)
    rows, csv_lines = [], []
    for n, level in enumerate(plan.levels):
        if copies:  # each level its own copies: none was sent before
            numbers = range(1 + n * plan.cold_requests, 1 + (n + 1) * plan.cold_requests)
            data = [perf.distinct_copy(videos[j % len(videos)], run_id, k, str(plan.videos[j % len(videos)]))
                    for j, k in enumerate(numbers)]
            kw: dict[str, Any] = {"request_count": plan.cold_requests}
        else:
            data = videos
            kw = {"measurement_interval_ms": plan.measurement_interval_ms, "stability_pct": plan.stability_pct,
                  "max_trials": plan.max_trials}
        before, own_before = stats.read(c, models), perf.metric_sums(metrics, stats.DECODE_TIMES, context=tls)
        proc, got = perf.run(plan.server, plan.protocol, data, plan.instructions, work, f"{level}:{level}",
                             model=plan.model, extra=plan.extra, access=plan.access, **kw)
        after, own_after = stats.read(c, models), perf.metric_sums(metrics, stats.DECODE_TIMES, context=tls)
        own = None if own_before is None or own_after is None else tuple(
            own_after[k] - own_before[k] for k in stats.DECODE_TIMES)
        if proc.returncode != 0:
            print(f"perf_analyzer exited with {proc.returncode} (its output is above); input data: "
                  f"{work}/input.json")
            raise PerfAnalyzerFailed(proc.returncode)
        for r in got:
            if copies:  # a fixed number of requests: the rate from their latencies (PerfRow.closed_loop_rate)
                r.infer_per_s = r.closed_loop_rate()
            rows.append({**asdict(r), "split": stats.split(before, after, r.mean_ms, plan.model, own)})
        lines = (work / "perf.csv").read_text().splitlines(keepends=True)
        csv_lines += lines if not csv_lines else lines[1:]
    after_cache = perf.cache_counts(metrics, context=tls)
    during = after_cache - before_cache if before_cache is not None and after_cache is not None else None
    print(f"\n{label}")
    print(f"{'concurrency':>11} {'infer/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    for r in rows:
        print(f"{r['concurrency']:>11} {r['infer_per_s']:>9.2f} {r['p50_ms']:>9.1f} {r['p95_ms']:>9.1f} "
              f"{r['p99_ms']:>9.1f}")
    print(split_lines(rows))
    print(cache_line(during, series, metrics, cache_bytes))
    return {"label": label, "rows": rows,
            "cache_during_measurement": asdict(during) if during is not None else None}, csv_lines


def series_label(series: str, cache_bytes: int, copies: bool, n: int) -> str:
    if series == "cached":
        return ("CACHED requests: each video was sent once first; the measured requests are feature-cache hits "
                "(decode and vision skipped: a second instruction on a video the server has seen)")
    if copies:
        why = "" if cache_bytes else " (no feature cache, but concurrent requests of one video share its work)"
        return (f"COLD requests: {n} per concurrency level, each with its own copy of a video the server had not "
                f"seen{why} (decode + vision + grounding every time); infer/s = concurrency / mean latency")
    return ("COLD requests: the server has no feature cache and shares no work between requests (an ensemble), so "
            "every request decodes and runs the vision tower")


def split_lines(rows: list[dict[str, Any]]) -> str:
    """Each level's per-step split, one line a level: ms per request queued + computing in each step, and the
    rest of the latency."""
    out = ["per request, ms (queue + compute) by step, from the server's statistics:"]
    for r in rows:
        s = r["split"]
        parts = [f"{m.removeprefix('videoitg_')} {v['queue_ms']:.1f}+{v['compute_ms']:.1f}"
                 for m, v in s["steps"].items() if v["calls_per_request"]]
        tail = f"other {s['other_ms']:.1f}" + (f", overlap {s['overlap_ms']:.1f}" if s["overlap_ms"] else "")
        out.append(f"  at concurrency {r['concurrency']}: " + ", ".join([*parts, tail]))
    return "\n".join(out)


def cache_line(during: perf.CacheCounts | None, series: str, metrics: str, cache_bytes: int) -> str:
    if not cache_bytes:
        return "feature cache: none on this deployment"
    if during is None:
        return f"feature cache counters not read (no videoitg metrics at {metrics}; pass --metrics HOST:PORT)"
    line = f"feature cache during the measurement: {during.hits:.0f} hits, {during.misses:.0f} misses"
    if series == "cold" and during.hits:
        line += " (WARNING: cold requests should not hit; another client may be using the server)"
    if series == "cached" and during.misses:
        line += " (some measured requests missed: the cache may be smaller than these videos' features)"
    return line
