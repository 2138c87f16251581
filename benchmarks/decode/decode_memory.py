"""A decoding process's memory over many decodes, with and without the heap trim after each
(`videoitg.decode.heap`).

    python -m benchmarks.decode.decode_memory [--decodes 4000] [--out benchmarks/results/decode_memory]

Each arm is a process of its own that decodes the sample clip `--decodes` times, each time a distinct copy (as
distinct videos reach the decode step), streamed in chunks the way the served decode step answers, `WORKERS` videos
at a time on a pool of threads (the step decodes each video on a worker of its pool). Its resident memory is read
every 100 decodes after `WARMUP` decodes; the trim's time is read beside the decode's. Writes OUT/decode_memory.json
(the command, machine and date with every figure) and OUT/decode_memory.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARMUP = 300
WORKERS = 4
EVERY = 100
ARMS = ("without the trim", "trim after each decode")


def arm(decodes: int, trim: bool) -> dict:
    """One process's figures: [decodes done, RSS MiB] every EVERY decodes, the median decode and trim (ms)."""
    import os

    from python_backend.step_decoder import decode_stream
    from videoitg.decode.heap import trim_freed_memory
    from videoitg.launch import procfs
    from videoitg.launch.perf import distinct_copy
    from videoitg.request.limits import Limits
    from videoitg.sampling import SamplingParams
    from videoitg.synthetic.sample import sample_video

    data, sampling, limits = sample_video()[0].read_bytes(), SamplingParams(), Limits()
    tag = os.urandom(8)
    decode_ms: list[float] = []
    trim_ms: list[float] = []

    def one(i: int) -> None:
        t0 = time.perf_counter()
        for _ in decode_stream(distinct_copy(data, tag, i), 64, sampling, limits, 16):
            pass
        t1 = time.perf_counter()
        if trim:
            trim_freed_memory()
            trim_ms.append((time.perf_counter() - t1) * 1e3)
        decode_ms.append((t1 - t0) * 1e3)

    rss: list[tuple[int, float]] = []
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(one, range(WARMUP)))
        rss.append((0, procfs.rss_mib(os.getpid())))
        for start in range(0, decodes, EVERY):
            list(pool.map(one, range(WARMUP + start, WARMUP + start + EVERY)))
            rss.append((start + EVERY, procfs.rss_mib(os.getpid())))
            print(f"  {'trim' if trim else 'no trim'}: {start + EVERY}/{decodes} decodes, RSS {rss[-1][1]:.1f} MiB",
                  file=sys.stderr, flush=True)
    return {"rss_mib": rss, "decode_ms_median": round(statistics.median(decode_ms[WARMUP:]), 2),
            "trim_ms_median": round(statistics.median(trim_ms[WARMUP:]), 3) if trim else None}


def picture(arms: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.figures import save

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, figures in arms.items():
        n, mib = zip(*figures["rss_mib"], strict=True)
        ax.plot(n, mib, marker=".", label=f"{name} (decode {figures['decode_ms_median']} ms)")
    ax.set_xlabel(f"decodes of the sample clip after {WARMUP} to warm up ({WORKERS} at a time)")
    ax.set_ylabel("resident memory of the process (MiB)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("One decoding process's memory, with and without the heap trim")
    return save(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decodes", type=int, default=4000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_memory")
    ap.add_argument("--arm", choices=("trim", "none"), help=argparse.SUPPRESS)  # one arm, in a process of its own
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(arm(a.decodes, a.arm == "trim")))
        return 0
    from videoitg.perf.record import machine

    arms = {}
    for name, flag in zip(ARMS, ("none", "trim"), strict=True):
        done = subprocess.run([sys.executable, "-m", "benchmarks.decode.decode_memory", "--decodes", str(a.decodes),
                               "--arm", flag], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        arms[name] = json.loads(done.stdout)
    for name, figures in arms.items():
        first, last = figures["rss_mib"][0][1], figures["rss_mib"][-1][1]
        figures["growth_pct"] = round(100 * (last - first) / first, 1)
        print(f"{name}: {first:.1f} -> {last:.1f} MiB over {a.decodes} decodes ({figures['growth_pct']:+.1f} %); "
              f"decode {figures['decode_ms_median']} ms, trim {figures['trim_ms_median']} ms")
    record = {"command": "python -m benchmarks.decode.decode_memory " + " ".join(sys.argv[1:]),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
              "decodes": a.decodes, "warmup": WARMUP, "workers": WORKERS, "arms": arms}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "decode_memory.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {a.out / 'decode_memory.json'} and {picture(arms, a.out / 'decode_memory.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
