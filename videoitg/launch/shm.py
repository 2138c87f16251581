"""What a launcher leaves in /dev/shm, named so that a later launcher removes only the leftovers of launchers it
can see are gone."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path

from videoitg.launch.procfs import pid_namespace

SHM_PREFIX = "videoitg_"  # python-backend shared-memory regions: /dev/shm/videoitg_<launcher tag>_<token>_<uuid>


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def launcher_tag() -> str:
    """'<pid namespace inode>.<pid>' of this process. It names what a launcher leaves in /dev/shm and /tmp, so that
    a later launcher removes only leftovers of processes it can see are gone: another container may share
    /dev/shm (a pod's IPC namespace) without sharing its PIDs."""
    return f"{pid_namespace()}.{os.getpid()}"


def is_stale(tag: str) -> bool:
    """Whether the launcher named by `launcher_tag()` output is gone (only decidable in our own PID namespace)."""
    ns, _, pid = tag.partition(".")
    return ns == launcher_tag().partition(".")[0] and pid.isdigit() and not pid_alive(int(pid))


def remove_stale_shared_memory(shm_dir: Path = Path("/dev/shm")) -> None:
    """Remove python-backend regions of servers whose launcher is gone (killed before it could clean up)."""
    for f in shm_dir.glob(f"{SHM_PREFIX}*"):
        if is_stale(f.name[len(SHM_PREFIX):].split("_", 1)[0]):
            with contextlib.suppress(OSError):
                f.unlink()


def remove_own_shared_memory(prefix: str, note: Callable[[str], None], shm_dir: Path = Path("/dev/shm")) -> None:
    """Remove the regions a stopped server (or its stubs) left behind, named with its `prefix`, each `note`d."""
    for f in shm_dir.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            f.unlink()
            note(f"removed leftover shared memory {f.name}")
