"""Every read of /proc the launcher makes: process states, groups, CPU time, python-backend stubs, port holders, the
kernel's ephemeral port range."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


def _stats() -> Iterator[tuple[int, list[str]]]:
    """(pid, the fields after the command name of /proc/PID/stat: proc(5) field 3 on, state, ppid, pgrp, ...) of
    every process; processes that exit while being read are skipped."""
    for p in PROC.iterdir():
        if not p.name.isdigit():
            continue
        try:
            yield int(p.name), (p / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue


def argv(pid: int) -> list[bytes]:
    """The command line of `pid`, split at its NULs."""
    return (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")


def group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` is still running (zombies do not count: they hold no memory or ports)."""
    return any(len(f) > 2 and f[2] == str(pgid) and f[0] not in ("Z", "X") for _, f in _stats())


def _stat_cpu_s(fields: list[str]) -> float:
    """CPU seconds (user + system) of a /proc/PID/stat's fields after its name: utime, stime (fields 14 and 15 of
    proc(5))."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stat_file_cpu_s(stat: Path) -> float:
    """CPU seconds (user + system) of a /proc stat file: /proc/PID/stat (every thread of the process, ended ones
    too) or /proc/PID/task/TID/stat (one thread's)."""
    return _stat_cpu_s(stat.read_text().rsplit(")", 1)[1].split())


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of group `pgid` (tritonserver and its python
    stubs): a stub reading and hashing a 16 GB checkpoint logs nothing for minutes but burns CPU."""
    return sum(_stat_cpu_s(f) for _, f in _stats() if len(f) > 12 and f[2] == str(pgid))


def cpu_s(pid: int) -> float:
    """CPU seconds used so far by the live threads of process `pid`, to the nanosecond: the first field of each
    thread's schedstat (time on a CPU). /proc/PID/stat counts in clock ticks, 10 ms each: coarser than a
    request the front passes on. Raises OSError where no thread's schedstat could be read (a kernel without it)."""
    ns, read = 0, False
    for task in (PROC / str(pid) / "task").iterdir():
        with contextlib.suppress(OSError):  # a thread that exits while being read
            ns += int((task / "schedstat").read_text().split()[0])
            read = True
    if not read:
        raise OSError(f"no schedstat readable for process {pid}")
    return ns / 1e9


def memory(pid: int | str = "self") -> dict[str, int]:
    """A process's resident memory now (`VmRSS`) and at its peak (`VmHWM`), in bytes. The peak is this program's
    own: unlike `getrusage`'s `ru_maxrss`, which a program started from a large process begins at that process's
    peak (Linux carries it across `exec`), and one that writing 5 to /proc/PID/clear_refs resets."""
    out = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def rss_mib(pid: int | None) -> float:
    """Resident memory of process `pid` in MiB (0 when there is none)."""
    if pid is None:
        return 0.0
    try:
        return memory(pid).get("VmRSS", 0) / 2**20
    except OSError:
        return 0.0


def state(pid: int) -> str:
    """The state letter of process `pid` (proc(5): R running, S sleeping, T stopped by a signal, t stopped by a
    tracer, Z zombie, ...); '' when it is gone."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def children(pid: int) -> list[int]:
    """The live children of `pid`."""
    return [child for child, f in _stats() if len(f) > 1 and f[1] == str(pid)]


@dataclass(frozen=True)
class Stub:
    """A python-backend stub as /proc shows it: its state letter (proc(5): R running, S sleeping, T stopped, ...) and
    the CPU seconds it has used (user + system, in clock ticks of 10 ms), and the name of its shared-memory region in
    /dev/shm (its command line's third word)."""

    state: str
    cpu_s: float
    region: str = ""

    @property
    def stopped(self) -> bool:
        """Stopped by a signal (SIGSTOP, SIGTSTP): it takes no request until it is continued. A stop of a tracer's
        (state t: a debugger, a sampling profiler) is the operator's own, not a fault."""
        return self.state == "T"


def stubs(pid: int | None) -> dict[str, dict[int, Stub]]:
    """Live python-backend stubs of the server `pid` per model (its own children only), by process id. Zombies do
    not count: a stub that died and was not yet reaped is gone."""
    out: dict[str, dict[int, Stub]] = {}
    if pid is None:
        return out
    for child, f in _stats():
        if len(f) < 13 or f[1] != str(pid) or f[0] in ("Z", "X"):
            continue
        try:
            cmd = argv(child)
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"triton_python_backend_stub") and len(cmd) > 1:
            model = Path(cmd[1].decode(errors="replace")).parent.parent.name  # <model>/<ver>/model.py
            region = cmd[2].decode(errors="replace") if len(cmd) > 2 else ""
            out.setdefault(model, {})[child] = Stub(f[0], _stat_cpu_s(f), region)
    return out


def stub_pids(pid: int | None) -> dict[str, set[int]]:
    """Live python-backend stubs of the server `pid` per model (its own children only)."""
    return {model: set(found) for model, found in stubs(pid).items()}


def port_holder(port: int) -> str:
    """'pid N (command line)' of the process listening on TCP `port`; '' when it cannot be seen."""
    inodes = set()
    for table in ("net/tcp", "net/tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in PROC.iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or not ours to read
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:  # closed since it was listed: the process's other descriptors are still read
                continue
            if link in inodes:
                cmd = argv(int(proc.name))
                return f"pid {proc.name} ({' '.join(a.decode(errors='replace') for a in cmd[:2])})"
    return ""


def pid_namespace() -> int:
    """The inode of this process's PID namespace (0 where /proc does not show it)."""
    try:
        return os.stat(PROC / "self" / "ns" / "pid").st_ino
    except OSError:
        return 0


def first_ephemeral_port() -> int:
    """The lowest port the kernel hands out itself (to a client's connect, to a bind to port 0)."""
    try:
        return int((PROC / "sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default
