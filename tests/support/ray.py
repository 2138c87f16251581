"""Helpers for the tests that run the batch driver on Ray: its environment, its session's processes, and what they
listen on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import videoitg

REPO = Path(videoitg.__file__).resolve().parents[1]


def ray_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def session_pids(sid: int) -> list[int]:
    """Processes of the session the batch driver leads (it and every Ray process it started)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(fields[3]) == sid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def kill_session(sid: int) -> None:
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def non_loopback_listeners(pids: list[int]) -> list[str]:
    """Listening TCP sockets of `pids` whose address is not 127.0.0.1 / ::1 (from /proc, no psutil needed)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    bad = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            local, state, inode = f[1], f[3], f[9]
            if state == "0A" and inode in inodes and local.split(":")[0] not in LOOPBACK:
                bad.append(local)
    return bad


def records(paths) -> list[dict]:
    return [json.loads(x) for p in paths for x in Path(p).read_text().splitlines() if x.strip()]


def run_to_end(cmd: list[str]) -> tuple[int, str, str]:
    proc = subprocess.Popen(cmd, cwd=REPO, env=ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        kill_session(proc.pid)  # Ray helpers that outlive their driver, if any
    return proc.returncode, stdout, stderr
