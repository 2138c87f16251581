"""The embedded default: the tiny checkpoint shipped in `videoitg/assets/tiny-videoitg/`, so the main job runs on a
fresh machine with no download (its sample video: `videoitg.synthetic.sample`). Generated files (caches, the sample,
the python backend's copy) live under the home: $VIDEOITG_HOME, else $XDG_CACHE_HOME/videoitg, else
~/.cache/videoitg; where it cannot be written, under a directory of this user's in the temporary directory, said
once (`files_home`)."""

from __future__ import annotations

import functools
import os
import stat
import sys
import tempfile
from pathlib import Path

from videoitg.errors import VideoITGError

ASSETS = Path(__file__).parent / "assets"
HOME_ENV = "VIDEOITG_HOME"


class HomeError(VideoITGError):
    """Something that must be written has nowhere to go: the home and the temporary directory refuse writes."""


def home() -> Path:
    """The home as configured (nothing is made here)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "videoitg"


def _writable(p: Path, own: bool = False) -> None:
    """Make `p` if needed and prove a file can be written in it (OSError otherwise); `own`: it must be this user's
    own directory, not a link (a directory in a shared temporary directory)."""
    p.mkdir(parents=True, exist_ok=True, mode=0o700 if own else 0o777)
    if own:
        st = os.lstat(p)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise PermissionError(13, "not a directory of this user's own", str(p))
    fd, name = tempfile.mkstemp(dir=p, prefix=".write-check-")
    os.close(fd)
    os.unlink(name)


def _temporary() -> Path | None:
    try:
        return Path(tempfile.gettempdir())
    except OSError:  # no usable temporary directory at all
        return None


@functools.cache
def _resolved(configured: Path, temporary: Path | None) -> tuple[Path | None, str]:
    """(where files go, why not the home: '' when it is the home), decided once per configured home."""
    try:
        _writable(configured)
        return configured, ""
    except OSError as e:
        why = f"{HOME_ENV}={configured} cannot be written ({e.strerror or e})"
    if temporary is None:
        return None, f"{why}, nor any temporary directory"
    fallback = temporary / f"videoitg-{os.getuid()}"
    try:
        _writable(fallback, own=True)
    except OSError as e:
        return None, f"{why}, nor {fallback} ({e.strerror or e})"
    return fallback, why


HOLDS = "its caches and the sample video"
_said: set[str] = set()


def _say_once(line: str) -> None:
    if line not in _said:
        _said.add(line)
        print(f"videoitg: {line}", file=sys.stderr, flush=True)


def files_home() -> Path | None:
    """Where this process writes what the home holds: the home, made if needed; where it cannot be written (a
    read-only filesystem, no permission), this user's own directory in the temporary directory; None where neither
    can be written (caches are then off). Either is said once on stderr."""
    where, why = _resolved(home(), _temporary())
    if why:
        _say_once(f"{why}: {HOLDS} go to {where} for this run" if where is not None else f"{why}: caches are off")
    return where


def writable_home(what: str) -> Path:
    """`files_home()` for `what`, which must be written: HomeError naming VIDEOITG_HOME and the fix where nothing
    can be written."""
    where, why = _resolved(home(), _temporary())
    if where is None:
        raise HomeError(f"{what} must be written and {why}: set {HOME_ENV} to a writable directory (in a container, "
                        "a volume or an emptyDir mounted there)")
    if why:
        _say_once(f"{why}: {HOLDS} go to {where} for this run")
    return where


def default_checkpoint() -> Path:
    """The shipped tiny checkpoint (package data; trained on the synthetic task by `videoitg.train.synthetic_run`)."""
    return ASSETS / "tiny-videoitg"


# Said once when the embedded checkpoint scores anything but the sample clip, in-process or by a server.
_DEMO = ("the embedded tiny demo checkpoint, trained on synthetic shapes: it is not a video model and its scores mean "
         "nothing for real video")
DEMO_NOTICE = f"NOTICE: scoring with {_DEMO}; use --checkpoint DIR with a VideoITG checkpoint (docs/checkpoints.md)"


def served_demo_notice(url: str) -> str:
    """The notice for a server at `url` that serves the embedded checkpoint."""
    return (f"NOTICE: {url} scores with {_DEMO}; serve a VideoITG checkpoint (`videoitg serve --checkpoint DIR`, "
            "docs/checkpoints.md)")


def is_demo_checkpoint(checkpoint: str | Path | None) -> bool:
    """Whether the checkpoint directory `checkpoint` is the embedded tiny one."""
    if checkpoint is None:
        return False
    try:
        return Path(checkpoint).resolve() == default_checkpoint().resolve()
    except (OSError, TypeError):
        return False
