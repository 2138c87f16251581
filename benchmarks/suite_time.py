"""The README's test command, timed beside a reading of the machine's speed, so that two readings taken on different
days (or machines) can be compared.

    python -m benchmarks.suite_time                        # bash scripts/test.sh, one reading
    python -m benchmarks.suite_time --json out.json -- -n 4  # arguments after -- go to pytest

A reading: the command's wall time, pytest's own time and counts (its last summary line), the CPU seconds of the
whole process tree (user + system of every process waited for), and how many cores that kept busy on average; and,
just before and just after, the reference: the CPU time of a fixed single-threaded loop (10 million Python
additions, this interpreter). On a shared host the reference moves with the neighbours (0.9-1.8 s on the project's
2-core machine within one day: benchmarks/RESULTS.md#the-test-suite); a suite reading is comparable with another only
where the two references agree.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOOP = 10_000_000
SUMMARY = re.compile(r"^=* ?(?P<body>\d+ \w+.*?) in (?P<seconds>[\d.]+)s(?: \([\d:]+\))?(?: =+)?\s*$")


def reference(n: int = LOOP) -> float:
    """CPU seconds of `n` Python additions in one thread: the machine's speed as this interpreter sees it."""
    t = time.process_time()
    x = 0
    for i in range(n):
        x += i
    return round(time.process_time() - t, 3)


def pytest_summary(output: str) -> dict[str, Any]:
    """pytest's last summary line ("== 1283 passed, 9 skipped in 771.43s (0:12:51) ==", or without the rules with
    -q): its seconds and counts."""
    for line in reversed(output.splitlines()):
        m = SUMMARY.search(line)
        if m:
            counts = {k: int(v) for v, k in re.findall(r"(\d+) (\w+)", m["body"])}
            return {"pytest_s": float(m["seconds"]), "counts": counts}
    return {}


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(command: list[str], log: Path | None = None) -> dict[str, Any]:
    """Run `command` from the repository root, its output shown and kept: wall, CPU of its process tree, pytest's
    summary. The CPU figure counts every process the tree waited for (a daemon that outlives its parent is not)."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    lines: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        code = proc.wait()
    wall = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if log is not None:
        log.write_text("".join(lines))
    return {"command": " ".join(command), "returncode": code, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cores_busy": round(cpu / wall, 2) if wall > 0 else None, **pytest_summary("".join(lines))}


def machine() -> dict[str, Any]:
    model = ""
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": model or platform.processor(), "cores": os.cpu_count(), "python": platform.python_version()}


def commit() -> str:
    """The checkout's short commit id, for a record of what ran."""
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the reading here")
    ap.add_argument("--log", type=Path, help="keep the command's output here")
    ap.add_argument("--command", default="bash scripts/test.sh", help="what to time (default: the README's)")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed on to the command")
    a = ap.parse_args(argv)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    before = reference()
    run = measure([*a.command.split(), *a.pytest_args], a.log)
    after = reference()
    reading = {"started": started, "commit": commit(), "machine": machine(),
               "reference_s": {"before": before, "after": after}, **run}
    print(json.dumps({k: reading[k] for k in ("wall_s", "pytest_s", "cpu_s", "cores_busy", "reference_s")
                      if k in reading}))
    if a.json:
        a.json.write_text(json.dumps(reading, indent=1) + "\n")
    return reading


if __name__ == "__main__":
    sys.exit(0 if main()["returncode"] == 0 else 1)
