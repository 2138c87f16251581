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


def need_text(repository: Path, region_bytes: int, shm_dir: Path = Path("/dev/shm")) -> str:
    """What /dev/shm holds and what the models of `repository` need there, with what to do: one region of
    `region_bytes` per python-backend instance to load, and about 3x the largest video more while serving
    (docs/deploy.md, Shared memory)."""
    from videoitg.contract.protocol import RepoSummary  # here: a launcher that never needs it never imports it

    summary = RepoSummary.find(repository)
    if summary is not None:
        instances = sum(m.count for m in summary.models.values() if m.kind)
        video = summary.video_bytes_bound(summary.public)
    else:  # a repository an operator wrote: one instance per model, the served video bound
        from videoitg.request.limits import SERVED_MAX_VIDEO_BYTES

        instances, video = len(list(repository.glob("*/config.pbtxt"))), SERVED_MAX_VIDEO_BYTES
    try:
        st = os.statvfs(shm_dir)
        has = f"{shm_dir} holds {st.f_blocks * st.f_frsize >> 20} MiB ({st.f_bavail * st.f_frsize >> 20} MiB free)"
    except OSError as e:
        has = f"{shm_dir} cannot be read ({e.strerror})"
    need = instances * region_bytes + 3 * video
    return (f"{has}; these models need {instances} x {region_bytes >> 20} MiB to load and about 3 x "
            f"{video >> 20} MiB more while serving: give it at least {-(-need >> 20)} MiB (docker run --shm-size, "
            "a memory-backed emptyDir's sizeLimit: docs/deploy.md, Shared memory)")
