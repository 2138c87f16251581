"""`videoitg perf --server HOST:PORT VIDEO...`: perf_analyzer against a running server, real videos as input, cold
requests (the default), cache hits (`--requests cached`) or both, each level's time split by step, a picture;
`videoitg perf compare RUN_DIR...`: runs side by side."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from videoitg.contract.access import access_from_args, add_client_flags
from videoitg.contract.protocol import TOP
from videoitg.errors import InputError

# Imports that need torch, the pipeline or an optional extra sit inside the functions that use them: `videoitg --help`
# answers without them (videoitg/commands/cli.py).

HELP = ("measure a running server with perf_analyzer (throughput, p50/p95/p99 latency, each step's share) using real "
        "videos as input: cold requests by default, cache hits with --requests cached; `videoitg perf compare "
        "RUN_DIR...` puts runs side by side")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", type=Path, metavar="VIDEO",
                   help="video file(s) sent as the VIDEO input (cycled); or `compare RUN_DIR RUN_DIR...`: the runs' "
                        "perf.json side by side (compare.md, compare.png in --out)")
    p.add_argument("--server", help="HOST:PORT of a running `videoitg serve` (needed to measure)")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--requests", choices=["cold", "cached", "both"], default="cold",
                   help="cold (default): every measured request carries a video the server has not cached, so it "
                        "decodes and runs the vision tower (on a server with the feature cache, each request sends "
                        "its own copy of a video); cached: each video is sent once first and the measured requests "
                        "are cache hits (decode and vision skipped): the figure for a second instruction on a video; "
                        "both: cold, then cached, drawn on the same axes")
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
    p.add_argument("--out", type=Path, default=None,
                   help="folder for input.json, perf.csv, perf.json (the figures, each level's split by step, what "
                        "was measured) and perf.png (default artifacts/perf; artifacts/perf-compare to compare)")
    p.add_argument("--perf-args", default="", help="more perf_analyzer arguments, passed through (one quoted string)")
    add_client_flags(p)  # perf_analyzer is given the key as -H: for its run, a local user's `ps` can read it


def run(args: argparse.Namespace) -> int:
    from videoitg.launch import perf
    from videoitg.perf.measure import PerfAnalyzerFailed, Plan, measure

    if str(args.videos[0]) == "compare":
        from videoitg.perf.compare import compare

        md, png = compare(args.videos[1:], args.out or Path("artifacts/perf-compare"))
        print(md.read_text(), end="")
        print(f"table: {md}; picture: {png}")
        return 0
    if not args.server:
        raise InputError("--server HOST:PORT is needed to measure (or `videoitg perf compare RUN_DIR...`)")
    plan = Plan(server=args.server, videos=args.videos, instructions=args.instruction or [perf.DEFAULT_INSTRUCTION],
                series=("cold", "cached") if args.requests == "both" else (args.requests,), protocol=args.protocol,
                model=args.model, levels=perf.concurrency_levels(args.concurrency), cold_requests=args.cold_requests,
                metrics=args.metrics, measurement_interval_ms=args.measurement_interval,
                stability_pct=args.stability, max_trials=args.max_trials, extra=shlex.split(args.perf_args),
                out=args.out or Path("artifacts/perf"), access=access_from_args(args))
    try:
        measure(plan)
    except PerfAnalyzerFailed:
        return 1
    print(f"perf_analyzer CSV: {plan.out / 'perf.csv'}; figures, split by step, what was measured: "
          f"{plan.out / 'perf.json'}; picture: {plan.out / 'perf.png'}")
    return 0
