"""Paths named by requests and manifests are accepted only under configured allowed roots.

Resolution follows symlinks before the check, so neither `../` nor a symlink inside a root can reach outside
it; `file://` URIs are accepted only as plain local paths (no host part), other schemes are refused.

A path checked now and opened later could have been swapped for a symlink in between. `open_resolved` opens a
resolved path once and checks the file it opened (the kernel's own name for it must be the checked path: no symlink
was followed); `pinned` hands the decoder a name that reaches that opened file however often it is reopened.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from videoitg.errors import InputError


def resolve_under_roots(name: str | os.PathLike, roots: list[str | os.PathLike], base: str | os.PathLike | None = None
                        ) -> Path:
    """Resolve `name` (path or file:// URI; relative paths against `base` or the first root) and return it only
    if it lies inside one of `roots` after following symlinks."""
    if not roots:
        raise InputError("no allowed roots configured: paths in requests are refused")
    s = os.fspath(name)
    if not s or "\x00" in s:
        raise InputError(f"invalid path {s!r}")
    if "://" in s or s.startswith("file:"):
        try:
            u = urlparse(s)
        except ValueError as e:
            raise InputError(f"invalid URI {s!r} ({e})") from None
        if u.scheme != "file":
            raise InputError(f"URI scheme {u.scheme!r} is not supported (only local paths and file:///...)")
        if u.netloc not in ("", "localhost"):
            raise InputError(f"file URI with host {u.netloc!r} is refused (only file:///path)")
        s = unquote(u.path)
        if "\x00" in s:
            raise InputError(f"invalid path {os.fspath(name)!r} (NUL byte)")
    p = Path(s)
    if not p.is_absolute():
        p = Path(base if base is not None else roots[0]) / p
    try:
        real = Path(os.path.realpath(p))
    except (ValueError, OSError) as e:  # lone surrogates (UnicodeEncodeError), over-long names
        raise InputError(f"invalid path {os.fspath(name)!r} ({e})") from None
    for r in roots:
        root = Path(os.path.realpath(r))
        if real == root or root in real.parents:
            return real
    allowed = [str(r) for r in roots]
    raise InputError(f"path {os.fspath(name)!r} resolves to {real}, outside the allowed roots {allowed}")


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def local_video(source: str | os.PathLike | bytes) -> str | os.PathLike | bytes:
    """A video argument as a local file or bytes: a `file://` URI becomes its path; any other URL is refused
    (videos are never fetched over the network: download the file first)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return source
    s = os.fspath(source)
    m = _SCHEME.match(s)
    if m is None:
        return source
    if m.group(1).lower() == "file":
        u = urlparse(s)
        if u.netloc not in ("", "localhost"):
            raise InputError(f"file URI with host {u.netloc!r} is refused (only file:///path)")
        return unquote(u.path)
    raise InputError(f"video {s!r} is a URL; URLs are not fetched: download the file and pass its local path "
                     "(or its bytes)")


_PROC_FD = Path("/proc/self/fd")


def _opened_name(fd: int) -> str | None:
    """The kernel's path of an open file (Linux), None where the system does not say."""
    try:
        return os.readlink(_PROC_FD / str(fd))
    except OSError:
        return None


def open_resolved(real: str | os.PathLike) -> int:
    """Open a path that `resolve_under_roots` returned (a real path: no symlink in it) for reading, and check what
    was opened: a regular file whose kernel path is exactly `real`, so no symlink swapped in since the check was
    followed. Returns the descriptor (the caller closes it); InputError otherwise."""
    name = os.fspath(real)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(name, flags)  # O_NONBLOCK: a FIFO put in its place does not hang the open
    except OSError as e:
        why = "it is now a symlink" if e.errno == errno.ELOOP else e.strerror  # O_NOFOLLOW met a symlink
        raise InputError(f"video {name!r} cannot be opened ({why})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"video {name!r} is not a regular file")
        opened = _opened_name(fd)
        if opened is None:  # no /proc: the path must still name the file opened, with no symlink on the way
            same = os.path.realpath(name) == name and os.stat(name).st_ino == st.st_ino
            opened = name if same else "another file"
        if opened != name:
            raise InputError(f"video {name!r} changed after it was checked: the file opened is {opened!r}")
    except BaseException:
        os.close(fd)
        raise
    return fd


_LEFT_OPEN: list[int] = []  # descriptors a reader that outlived its caller may still reopen


@contextlib.contextmanager
def pinned(real: str | os.PathLike, leave_open_on: tuple[type[BaseException], ...] = ()) -> Iterator[str]:
    """`open_resolved(real)`, then a path that reaches the file opened (Linux: /proc/self/fd/N, which every later
    open in this process follows to that same file, whatever happens to `real`), held open for the block. Where
    the system has no /proc, `real` itself (checked when opened; later opens are not).

    `leave_open_on`: errors after which a reader may still be running in a thread of its own (a decode that ran
    out of time): the descriptor then stays open for the life of the process, since its number, reused for another
    file, would hand that reader the wrong bytes."""
    fd = open_resolved(real)
    try:
        yield str(_PROC_FD / str(fd)) if _opened_name(fd) is not None else os.fspath(real)
    except leave_open_on:
        _LEFT_OPEN.append(fd)
        raise
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
