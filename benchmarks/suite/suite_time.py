"""The README's test command, timed beside a reading of the machine's speed, so that two readings taken on different
days (or machines) can be compared.

    python -m benchmarks.suite.suite_time                        # bash scripts/test.sh, one reading
    python -m benchmarks.suite.suite_time --json out.json -- -n 4  # arguments after -- go to pytest

A reading: the command's wall time, pytest's own time and counts (its last summary line), the CPU seconds of the
whole process tree (user + system of every process waited for), and how many cores that kept busy on average; a
census of every process started during the run, sampled from /proc (it also counts what no one waited for, such as
Ray's daemons), by kind; and, just before and just after, the reference: the CPU time of a fixed single-threaded
loop (10 million Python additions, this interpreter). On a shared host the reference moves with the neighbours
(0.39 s before and 0.66 s after one run on a 2-core machine: benchmarks/RESULTS.md#the-test-suite); a suite reading
is comparable with another only where the two references agree.
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
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
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


OTHERS = 12  # the largest commands of the "other" kind a reading lists
MODULES = 20  # the test modules whose processes cost the most CPU, listed in a reading


class Census:
    """Every process started while it runs, sampled from /proc every `every_s`: its CPU time when last seen, by kind,
    the "other" kind by what it ran (`command`), and by the test module that started it (`module`: the
    `PYTEST_CURRENT_TEST` a process inherited; a test worker's own CPU has none). A process that lives less than one
    interval may be missed."""

    def __init__(self, every_s: float = 0.25) -> None:
        self.every_s = every_s
        self.since = self._uptime_ticks()
        # (pid, start tick) -> (kind, command, test module, CPU s)
        self.seen: dict[tuple[int, int], tuple[str, str, str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _uptime_ticks() -> int:
        return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))

    @staticmethod
    def kind(comm: str, cmdline: str) -> str:
        if comm.startswith("triton_python"):
            return "tritonserver python stubs"
        if comm == "tritonserver":
            return "tritonserver"
        # Ray's workers and actors: started as `python --node-ip-address=...`, renamed `ray::<what>` once up
        if comm.startswith("ray::") or "/ray/" in cmdline or "--node-ip-address" in cmdline or comm in (
                "raylet", "gcs_server"):
            return "ray"
        if "exec(eval(sys.stdin" in cmdline:  # execnet's bootstrap: a pytest-xdist worker
            return "test workers"
        return "other"

    @staticmethod
    def command(comm: str, cmdline: str) -> str:
        """What a process ran, in a few words: `-m MODULE [SUBCOMMAND]` or a script's name (and its subcommand) for
        Python, else the program's name."""
        argv = cmdline.split()
        if not argv or not Path(argv[0]).name.startswith("python"):
            return comm
        args = argv[1:]
        while args and args[0].startswith("-") and args[0] not in ("-m", "-c"):
            args = args[1:]
        if args[:1] == ["-c"] or not args:
            return "python -c" if args else "python"
        head = ["-m", args[1]] if args[0] == "-m" and len(args) > 1 else [Path(args[0]).name]
        rest = args[len(head):len(head) + 1]
        return " ".join(head + [a for a in rest if a.isidentifier()])

    @staticmethod
    def module(environ: bytes) -> str:
        """The test module a process was started under, from its environment (pytest's `PYTEST_CURRENT_TEST`,
        "tests/x/test_y.py::test_z (call)", which every subprocess of a test inherits); "" when none."""
        for entry in environ.split(b"\0"):
            if entry.startswith(b"PYTEST_CURRENT_TEST="):
                return entry[len(b"PYTEST_CURRENT_TEST="):].decode(errors="replace").split("::", 1)[0]
        return ""

    def sample(self) -> None:
        hz = os.sysconf("SC_CLK_TCK")
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
                fields = stat[stat.rindex(")") + 2:].split()  # from the state on
                start = int(fields[19])
                if start < self.since:
                    continue
                key = (int(d.name), start)
                if key in self.seen:
                    kind, command, module = self.seen[key][:3]
                else:
                    comm = stat[stat.index("(") + 1:stat.rindex(")")]
                    cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    kind, command = self.kind(comm, cmdline), self.command(comm, cmdline)
                    module = self.module((d / "environ").read_bytes())
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile
            self.seen[key] = (kind, command, module, (int(fields[11]) + int(fields[12])) / hz)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def __enter__(self) -> Census:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self, wall_s: float) -> dict[str, Any]:
        by_kind: dict[str, float] = {}
        other: dict[str, float] = {}
        by_module: dict[str, float] = {}
        for kind, command, module, cpu in self.seen.values():
            by_kind[kind] = by_kind.get(kind, 0.0) + cpu
            if kind == "other":
                other[command] = other.get(command, 0.0) + cpu
            if module:
                by_module[module] = by_module.get(module, 0.0) + cpu
        total = sum(by_kind.values())
        return {"processes": len(self.seen), "cpu_s": round(total, 1),
                "cores_busy": round(total / wall_s, 2) if wall_s > 0 else None,
                "cpu_s_by_kind": {k: round(v, 1) for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])},
                "other_by_command": {k: round(v, 1) for k, v in sorted(other.items(), key=lambda kv: -kv[1])[:OTHERS]},
                "subprocesses_by_module": {k: round(v, 1) for k, v in
                                           sorted(by_module.items(), key=lambda kv: -kv[1])[:MODULES]}}


def measure(command: list[str], log: Path | None = None) -> dict[str, Any]:
    """Run `command` from the repository root, its output shown and kept: wall, CPU of its process tree, pytest's
    summary. Its CPU figure counts every process the tree waited for (a daemon that outlives its parent is not; the
    census counts it)."""
    cpu0, t0 = children_cpu(), time.perf_counter()
    lines: list[str] = []
    with Census() as census, subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                              text=True, bufsize=1) as proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            lines.append(line)
        code = proc.wait()
    wall = time.perf_counter() - t0
    cpu = children_cpu() - cpu0
    if log is not None:
        log.write_text("".join(lines))
    return {"command": " ".join(command), "returncode": code, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "cores_busy": round(cpu / wall, 2) if wall > 0 else None, "census": census.summary(wall),
            **pytest_summary("".join(lines))}


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
    print(json.dumps({k: reading[k] for k in ("wall_s", "pytest_s", "cpu_s", "cores_busy", "census", "reference_s")
                      if k in reading}))
    if a.json:
        a.json.write_text(json.dumps(reading, indent=1) + "\n")
    return reading


if __name__ == "__main__":
    sys.exit(0 if main()["returncode"] == 0 else 1)
