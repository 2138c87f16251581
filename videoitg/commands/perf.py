"""`videoitg perf --server HOST:PORT VIDEO...`: perf_analyzer against a running server, real videos as input, cold
requests (the default) or cache hits (`--requests cached`), and it says which."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from videoitg.launch.perf import CacheCounts

import argparse
import os
import shlex
from pathlib import Path

from videoitg.contract.parameters import FEATURE_CACHE_BYTES
from videoitg.contract.protocol import TOP
from videoitg.errors import InputError
from videoitg.writes import write_whole

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("measure a running server with perf_analyzer (throughput, p50/p95/p99 latency) using real videos as input: "
        "cold requests by default, cache hits with --requests cached")
MAX_INPUT_BYTES = 1 << 30  # perf_analyzer holds its whole input in memory


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", type=Path, help="video file(s) sent as the VIDEO input (cycled)")
    p.add_argument("--server", required=True, help="HOST:PORT of a running `videoitg serve`")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--requests", choices=["cold", "cached"], default="cold",
                   help="cold (default): every measured request carries a video the server has not cached, so it "
                        "decodes and runs the vision tower (on a server with the feature cache, each request sends "
                        "its own copy of a video); cached: each video is sent once first and the measured requests "
                        "are cache hits (decode and vision skipped): the figure for a second instruction on a video")
    p.add_argument("--cold-requests", type=int, default=16,
                   help="requests per concurrency level in cold mode on a server with the feature cache (each its "
                        "own video copy, sent exactly once; default 16)")
    p.add_argument("--metrics", default=None, metavar="HOST:PORT",
                   help="the server's metrics port, to report its cache hits and misses during the measurement "
                        "(default: the --server host, port 8002, `videoitg serve`'s default)")
    p.add_argument("--instruction", "-i", action="append",
                   help="instruction(s) sent with the videos (repeat for several; default: a generic one)")
    p.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range START:END[:STEP]")
    p.add_argument("--model", default=TOP, help=f"model name (default {TOP})")
    p.add_argument("--measurement-interval", type=int, default=4000,
                   help="ms per measurement window (windows are used except for cold requests on a cached server)")
    p.add_argument("--stability", type=int, default=50,
                   help="perf_analyzer --stability-percentage (default 50: loose enough for a busy CPU machine)")
    p.add_argument("--max-trials", type=int, default=10)
    p.add_argument("--out", type=Path, default=Path("artifacts/perf"),
                   help="folder for input.json, perf.csv and perf.json (what was measured, the rows, cache counts)")
    p.add_argument("--perf-args", default="", help="more perf_analyzer arguments, passed through (one quoted string)")


def run(args: argparse.Namespace) -> int:
    from videoitg.client.kserve import VideoITGClient, protocol_mismatch
    from videoitg.launch import perf

    run_id = os.urandom(8)  # in every copy this run makes: none is one the server saw before

    for v in args.videos:
        if not v.is_file():
            raise InputError(f"video {v} does not exist")
    levels = perf.concurrency_levels(args.concurrency)
    if args.cold_requests < max(levels):
        raise InputError(f"--cold-requests {args.cold_requests} is below the highest concurrency {max(levels)}")
    hint = protocol_mismatch(args.server, args.protocol)
    if hint:
        raise InputError(hint)
    instructions = args.instruction or [perf.DEFAULT_INSTRUCTION]
    videos = perf.read_videos(args.videos)
    metrics = args.metrics or f"{args.server.split('://', 1)[-1].rpartition(':')[0]}:8002"
    with VideoITGClient(args.server, args.protocol, model=args.model) as c:
        if not c.is_ready():
            raise InputError(f"no ready model {args.model!r} at {args.server} ({args.protocol}): start `videoitg "
                             "serve` first")
        params = c.model_parameters()
        if FEATURE_CACHE_BYTES not in params and c.accepts_digest():  # a BLS model that did not say
            raise InputError(f"cannot read the feature-cache size of {args.model!r} at {args.server}: whether its "
                             "requests would be cold is unknown")
        cache_bytes = int(params.get(FEATURE_CACHE_BYTES, "0") or 0)  # an ensemble has no cache (no parameter)
        copies = args.requests == "cold" and cache_bytes > 0
        if args.requests == "cached" and not cache_bytes:
            raise InputError(f"{args.server} serves {args.model!r} without a feature cache (an ensemble, or "
                             "--cache-bytes 0): every request is cold; measure with --requests cold")
        # Sent once before measuring: a cached run's warm-up (it fills the cache), a cold run's first-request costs
        # kept out of the figures; also fails early, with the server's message, on an input it refuses.
        first = {}
        for i, data in enumerate(videos):
            for text in instructions:
                first[i, text] = c.infer(data, text)
            if copies:  # the server must score a copy as the video itself, and not as a cache hit
                check = c.infer(perf.distinct_copy(data, run_id, 0, str(args.videos[i])), instructions[0])
                same = first[i, instructions[0]].result
                if check.cache_hit or check.result.frame_indices != same.frame_indices or max(
                        abs(a - b) for a, b in zip(check.result.logits, same.logits, strict=True)) > 1e-4:
                    raise InputError(f"{args.videos[i]}: the server did not score a distinct copy as a new video "
                                     "with the same frames; cold requests cannot be made this way")
    label = _label(args.requests, cache_bytes, copies, args.cold_requests)
    print(f"measuring: {label}", flush=True)
    extra = shlex.split(args.perf_args)
    before = perf.cache_counts(metrics)
    if copies:
        rows, proc, csv_lines = [], None, []
        size = sum(len(v) for v in videos) / len(videos) * args.cold_requests * 4 / 3
        if size > MAX_INPUT_BYTES:
            raise InputError(f"{args.cold_requests} copies of these videos make {size / 2**30:.1f} GiB of input for "
                             "perf_analyzer; lower --cold-requests, use shorter clips, or measure a deployment "
                             "without the cache (`videoitg serve --cache-bytes 0`)")
        for n, level in enumerate(levels):  # each level its own copies: none was sent before
            numbers = range(1 + n * args.cold_requests, 1 + (n + 1) * args.cold_requests)
            data = [perf.distinct_copy(videos[j % len(videos)], run_id, k, str(args.videos[j % len(videos)]))
                    for j, k in enumerate(numbers)]
            proc, got = perf.run(args.server, args.protocol, data, instructions, args.out, f"{level}:{level}",
                                 model=args.model, request_count=args.cold_requests, extra=extra)
            if proc.returncode != 0:
                break
            for r in got:  # a fixed number of requests: the rate from their latencies (PerfRow.closed_loop_rate)
                r.infer_per_s = r.closed_loop_rate()
            rows += got
            lines = (args.out / "perf.csv").read_text().splitlines(keepends=True)
            csv_lines += lines if not csv_lines else lines[1:]
        write_whole(args.out / "perf.csv", "".join(csv_lines))  # every level's row (perf_analyzer's own figures)
    else:
        proc, rows = perf.run(args.server, args.protocol, videos, instructions, args.out, args.concurrency,
                              model=args.model, measurement_interval_ms=args.measurement_interval,
                              stability_pct=args.stability, max_trials=args.max_trials, extra=extra)
    after = perf.cache_counts(metrics)
    if proc.returncode != 0:
        print(f"perf_analyzer exited with {proc.returncode} (its output is above); input data: {args.out}/input.json")
        return 1
    during = after - before if before is not None and after is not None else None
    print(f"\n{label}")
    print(f"{'concurrency':>11} {'infer/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    for r in rows:
        print(f"{r.concurrency:>11} {r.infer_per_s:>9.2f} {r.p50_ms:>9.1f} {r.p95_ms:>9.1f} {r.p99_ms:>9.1f}")
    print(_cache_line(during, args.requests, metrics, cache_bytes))
    perf.write_report(args.out / "perf.json", args.requests, label, rows, during)
    print(f"perf_analyzer CSV: {args.out / 'perf.csv'}; what was measured, rows and cache counts: "
          f"{args.out / 'perf.json'}")
    return 0


def _label(requests: str, cache_bytes: int, copies: bool, n: int) -> str:
    if requests == "cached":
        return ("CACHED requests: each video was sent once first; the measured requests are feature-cache hits "
                "(decode and vision skipped: a second instruction on a video the server has seen)")
    if copies:
        return (f"COLD requests: {n} per concurrency level, each with its own copy of a video the server had not "
                "seen (decode + vision + grounding every time); infer/s = concurrency / mean latency")
    return ("COLD requests: the server has no feature cache (an ensemble, or --cache-bytes 0), so every request "
            "decodes and runs the vision tower")


def _cache_line(during: CacheCounts, requests: str, metrics: str, cache_bytes: int) -> str:
    if not cache_bytes:
        return "feature cache: none on this deployment"
    if during is None:
        return f"feature cache counters not read (no videoitg metrics at {metrics}; pass --metrics HOST:PORT)"
    line = f"feature cache during the measurement: {during.hits:.0f} hits, {during.misses:.0f} misses"
    if requests == "cold" and during.hits:
        line += " (WARNING: cold requests should not hit; another client may be using the server)"
    if requests == "cached" and during.misses:
        line += " (some measured requests missed: the cache may be smaller than these videos' features)"
    return line
