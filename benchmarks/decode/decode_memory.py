"""A decoding process's memory over many decodes: with and without the heap trim after each
(`videoitg.decode.heap`), and with the decode's threads kept (`videoitg.decode.threads`) or a thread started for
each of a decode's tasks.

    python -m benchmarks.decode.decode_memory [--decodes 3000] [--out benchmarks/results/decode_memory]

Each arm is a process of its own that decodes the sample clip `--decodes` times, each time a distinct copy (as
distinct videos reach the decode step), streamed in chunks the way the served decode step answers, 4 videos at a
time on a pool of threads (the served step decodes each video on a worker of its pool) or one at a time (a process
scoring videos one after another). Its resident memory and what malloc still holds (`heap.in_use_bytes`) are read
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
EVERY = 100
# name: (videos at a time, trim after each decode, the decode's threads kept)
ARMS: dict[str, tuple[int, bool, bool]] = {
    "4 at a time, trim, threads kept (the served step)": (4, True, True),
    "4 at a time, no trim, threads kept": (4, False, True),
    "4 at a time, trim, a thread started per task": (4, True, False),
    "4 at a time, no trim, a thread started per task": (4, False, False),
    "1 at a time, trim, threads kept": (1, True, True),
    "1 at a time, trim, a thread started per task": (1, True, False),
    "1 at a time, no trim, threads kept (in-process scoring)": (1, False, True),
    "1 at a time, no trim, a thread started per task": (1, False, False),
}


def _started_per_task() -> None:
    """The decode's tasks each on a thread started for it and ended after it, instead of a kept one."""
    import threading

    from videoitg.decode import threads

    def start(fn, name: str) -> threads.Task:
        task = threads.Task(fn, name)

        def run() -> None:
            try:
                fn()
            finally:
                task.finish()

        threading.Thread(target=run, name=name, daemon=True).start()
        return task

    threads.start = start


def arm(decodes: int, workers: int, trim: bool, kept: bool) -> dict:
    """One process's figures: [decodes done, RSS MiB, MiB malloc holds] every EVERY decodes, the median decode
    and trim (ms)."""
    import os

    if not kept:
        _started_per_task()
    from python_backend.step_decoder import decode_stream
    from videoitg.decode.heap import in_use_bytes, trim_freed_memory
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

    def in_use_mib() -> float | None:
        held = in_use_bytes()
        return None if held is None else held / 2**20

    rss: list[tuple[int, float, float | None]] = []
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, range(WARMUP)))
        rss.append((0, procfs.rss_mib(os.getpid()), in_use_mib()))
        for start in range(0, decodes, EVERY):
            list(pool.map(one, range(WARMUP + start, WARMUP + start + EVERY)))
            rss.append((start + EVERY, procfs.rss_mib(os.getpid()), in_use_mib()))
            print(f"  {workers}, {'trim' if trim else 'no trim'}, {'kept' if kept else 'started'}: "
                  f"{start + EVERY}/{decodes} decodes, RSS {rss[-1][1]:.1f} MiB", file=sys.stderr, flush=True)
    return {"rss_mib": rss, "decode_ms_median": round(statistics.median(decode_ms[WARMUP:]), 2),
            "trim_ms_median": round(statistics.median(trim_ms[WARMUP:]), 3) if trim else None}


def picture(arms: dict[str, dict], out: Path) -> Path:
    """Two panels, 4 videos at a time and 1 at a time: each arm's resident memory against decodes done."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.figures import save

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for name, figures in arms.items():
        at_once, _, rest = name.partition(" at a time, ")
        ax = axes[0 if at_once == "4" else 1]
        n, mib, _ = zip(*figures["rss_mib"], strict=True)
        colour = {(True, True): "C0", (False, True): "C1", (True, False): "C2", (False, False): "C3"}[
            (not rest.startswith("no trim"), "kept" in rest)]  # one colour an arm's kind, in both panels
        ax.plot(n, mib, marker=".", color=colour, label=f"{rest} (decode {figures['decode_ms_median']:.0f} ms)")
        ax.set_title(f"{at_once} {'videos' if at_once != '1' else 'video'} at a time")
    for ax in axes:
        ax.set_xlabel(f"decodes of the sample clip after {WARMUP} to warm up")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("resident memory of the process (MiB)")
    fig.suptitle("One decoding process's memory: the heap trim, and the decode's threads kept or started per task")
    return save(fig, out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decodes", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_memory")
    ap.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)  # one arm, in a process of its own
    a = ap.parse_args()
    if a.arm:
        print(json.dumps(arm(a.decodes, *ARMS[a.arm])))
        return 0
    from videoitg.perf.record import machine

    arms = {}
    for name in ARMS:
        done = subprocess.run([sys.executable, "-m", "benchmarks.decode.decode_memory", "--decodes", str(a.decodes),
                               "--arm", name], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        arms[name] = json.loads(done.stdout)
    for name, figures in arms.items():
        first, last = figures["rss_mib"][0][1], figures["rss_mib"][-1][1]
        figures["growth_pct"] = round(100 * (last - first) / first, 1)
        figures["kib_per_decode"] = round((last - first) * 1024 / a.decodes, 2)
        held_first, held_last = figures["rss_mib"][0][2], figures["rss_mib"][-1][2]
        figures["allocated_kib_per_decode"] = (  # malloc's, not freed: a leak; None without glibc's mallinfo2
            None if held_first is None else round((held_last - held_first) * 1024 / a.decodes, 2))
        print(f"{name}: {first:.1f} -> {last:.1f} MiB over {a.decodes} decodes ({figures['growth_pct']:+.1f} %); "
              f"still allocated {figures['allocated_kib_per_decode']} KiB a decode; "
              f"decode {figures['decode_ms_median']} ms, trim {figures['trim_ms_median']} ms")
    record = {"command": "python -m benchmarks.decode.decode_memory " + " ".join(sys.argv[1:]),
              "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "machine": machine(),
              "decodes": a.decodes, "warmup": WARMUP,
              "arms": {name: {"videos_at_a_time": ARMS[name][0], "trim": ARMS[name][1], "threads_kept": ARMS[name][2],
                              **figures} for name, figures in arms.items()}}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "decode_memory.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {a.out / 'decode_memory.json'} and {picture(arms, a.out / 'decode_memory.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
