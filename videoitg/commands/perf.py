"""`videoitg perf --server HOST:PORT VIDEO...`: perf_analyzer against a running server, real videos as input."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from videoitg.errors import InputError

HELP = "measure a running server with perf_analyzer (throughput, p50/p95/p99 latency) using real videos as input"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("videos", nargs="+", type=Path, help="video file(s) sent as the VIDEO input (cycled)")
    p.add_argument("--server", required=True, help="HOST:PORT of a running `videoitg serve`")
    p.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    p.add_argument("--instruction", "-i", action="append",
                   help="instruction(s) sent with the videos (repeat for several; default: a generic one)")
    p.add_argument("--concurrency", default="1:4", help="perf_analyzer --concurrency-range START:END[:STEP]")
    p.add_argument("--model", default="videoitg", help="model name (default videoitg)")
    p.add_argument("--measurement-interval", type=int, default=4000, help="ms per measurement window")
    p.add_argument("--stability", type=int, default=50,
                   help="perf_analyzer --stability-percentage (default 50: loose enough for a busy CPU machine)")
    p.add_argument("--max-trials", type=int, default=10)
    p.add_argument("--no-warmup", action="store_true",
                   help="do not send each (video, instruction) once before measuring (by default the first, cold "
                        "request of each video, which decodes and encodes it, is kept out of the windows)")
    p.add_argument("--out", type=Path, default=Path("artifacts/perf"), help="folder for input.json and perf.csv")
    p.add_argument("--perf-args", default="", help="more perf_analyzer arguments, passed through (one quoted string)")


def run(args: argparse.Namespace) -> int:
    from videoitg.serving import perf
    from videoitg.serving.client import VideoITGClient, protocol_mismatch

    for v in args.videos:
        if not v.is_file():
            raise InputError(f"video {v} does not exist")
    hint = protocol_mismatch(args.server, args.protocol)
    if hint:
        raise InputError(hint)
    instructions = args.instruction or [perf.DEFAULT_INSTRUCTION]
    with VideoITGClient(args.server, args.protocol, model=args.model) as c:
        if not c.is_ready():
            raise InputError(f"no ready model {args.model!r} at {args.server} ({args.protocol}): start `videoitg "
                             "serve` first")
        if not args.no_warmup:
            for v in args.videos:
                for text in instructions:
                    c.infer(v, text)  # also fails early, with the server's message, on an input it refuses
    extra = shlex.split(args.perf_args)
    proc, rows = perf.run(args.server, args.protocol, args.videos, instructions,
                          args.out, args.concurrency, model=args.model,
                          measurement_interval_ms=args.measurement_interval, stability_pct=args.stability,
                          max_trials=args.max_trials, extra=extra)
    if proc.returncode != 0:
        print(f"perf_analyzer exited with {proc.returncode} (its output is above); input data: {args.out}/input.json")
        return 1
    print(f"\n{'concurrency':>11} {'infer/s':>9} {'p50 ms':>9} {'p95 ms':>9} {'p99 ms':>9}")
    for r in rows:
        print(f"{r.concurrency:>11} {r.infer_per_s:>9.2f} {r.p50_ms:>9.1f} {r.p95_ms:>9.1f} {r.p99_ms:>9.1f}")
    print(f"perf_analyzer CSV: {args.out / 'perf.csv'}")
    return 0
