"""Paths named by requests and manifests are accepted only under configured allowed roots.

Resolution follows symlinks before the check, so neither `../` nor a symlink inside a root can reach outside
it; `file://` URIs are accepted only as plain local paths (no host part), other schemes are refused.

A path checked now and opened later could have been swapped for a symlink in between. `open_resolved` opens a
resolved path once and checks the file it opened (the kernel's own name for it must be the checked path: no symlink
was followed); `pinned` hands the decoder a name that reaches that opened file however often it is reopened.

A served request may name its video (VIDEO_URI) instead of carrying it, only under the media roots the operator
allows (`videoitg serve --media-root DIR`; none by default): `MediaRoots` resolves such a reference with the same
confinement and opens it with the same check, refusing each hostile reference with its own typed error whose
message quotes at most a short prefix of what the request sent.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from videoitg.errors import InputError


class PathRefusedError(InputError):
    """A path named by a request or a manifest that is refused; the subclass says why."""


class ReferencesOffError(PathRefusedError):
    """The server allows no media root, so videos named by reference are refused."""


class InvalidReferenceError(PathRefusedError):
    """Not a local absolute path (relative, another URI scheme, a host, a NUL byte, too long)."""


class OutsideRootsError(PathRefusedError):
    """The path, its symlinks followed, lies outside every allowed root."""


class MediaNotFoundError(PathRefusedError):
    """Nothing can be opened at the path (missing, or unreadable)."""


class NotARegularFileError(PathRefusedError):
    """The path names a directory, a device, a FIFO or a socket."""


class MediaChangedError(PathRefusedError):
    """The file changed between its check and its use (swapped for a symlink, replaced, rewritten)."""


def local_path(name: str) -> str:
    """The local path a name gives: itself, or a `file://` URI's path. ValueError saying why not."""
    if "\x00" in name:
        raise ValueError("it holds a NUL byte")
    if "://" in name or name.startswith("file:"):
        u = urlparse(name)  # ValueError on a malformed one
        if u.scheme != "file":
            raise ValueError(f"URI scheme {u.scheme[:16]!r} is not supported (only local paths and file:///...)")
        if u.netloc not in ("", "localhost"):
            raise ValueError(f"file URI with host {u.netloc[:32]!r} is refused (only file:///path)")
        name = unquote(u.path)
        if "\x00" in name:
            raise ValueError("it holds a NUL byte")
    return name


def confine(path: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> tuple[Path, bool]:
    """`path`'s real path (every symlink followed) and whether it lies inside one of `roots` (a root itself
    counts). ValueError / OSError where the system cannot resolve it."""
    real = Path(os.path.realpath(path))
    for r in roots:
        root = Path(os.path.realpath(r))
        if real == root or root in real.parents:
            return real, True
    return real, False


def resolve_under_roots(name: str | os.PathLike, roots: list[str | os.PathLike], base: str | os.PathLike | None = None
                        ) -> Path:
    """Resolve `name` (path or file:// URI; relative paths against `base` or the first root) and return it only
    if it lies inside one of `roots` after following symlinks."""
    if not roots:
        raise ReferencesOffError("no allowed roots configured: paths in requests are refused")
    s = os.fspath(name)
    if not s:
        raise InvalidReferenceError(f"invalid path {s!r}")
    try:
        p = Path(local_path(s))
    except ValueError as e:
        raise InvalidReferenceError(f"invalid path {s!r} ({e})") from None
    if not p.is_absolute():
        p = Path(base if base is not None else roots[0]) / p
    try:
        real, inside = confine(p, roots)
    except (ValueError, OSError) as e:  # lone surrogates (UnicodeEncodeError), over-long names
        raise InvalidReferenceError(f"invalid path {s!r} ({e})") from None
    if not inside:
        allowed = [str(r) for r in roots]
        raise OutsideRootsError(f"path {s!r} resolves to {real}, outside the allowed roots {allowed}")
    return real


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


def file_identity(st: os.stat_result) -> str:
    """What tells one file's content from another's under the same name: device, inode, size and the times a write
    or a replacement changes (ctime cannot be set back)."""
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}


def open_resolved(real: str | os.PathLike, label: str | None = None, identity: str | None = None) -> int:
    """Open a path that `resolve_under_roots` returned (a real path: no symlink in it) for reading, and check what
    was opened: a regular file whose kernel path is exactly `real`, so no symlink swapped in since the check was
    followed, and (with `identity`) the very file `file_identity` described. Returns the descriptor (the caller
    closes it); a PathRefusedError otherwise, which names the file as `label` (default: the path)."""
    name = os.fspath(real)
    label = repr(name) if label is None else label
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(name, flags)  # O_NONBLOCK: a FIFO put in its place does not hang the open
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            raise MediaChangedError(f"video {label} cannot be opened (it is now a symlink)") from None
        raise MediaNotFoundError(f"video {label} cannot be opened ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = _KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise NotARegularFileError(f"video {label} is {kind}, not a regular file")
        opened = _opened_name(fd)
        if opened is None:  # no /proc: the path must still name the file opened, with no symlink on the way
            same = os.path.realpath(name) == name and os.stat(name).st_ino == st.st_ino
            opened = name if same else "another file"
        if opened != name:
            shown = f"the file opened is {opened!r}" if label == repr(name) else "another file was opened"
            raise MediaChangedError(f"video {label} changed after it was checked: {shown}")
        if identity is not None and file_identity(st) != identity:
            raise MediaChangedError(f"video {label} changed after it was checked (replaced or rewritten): "
                                    "send the request again")
    except BaseException:
        os.close(fd)
        raise
    return fd


_LEFT_OPEN: list[int] = []  # descriptors a reader that outlived its caller may still reopen


@contextlib.contextmanager
def pinned(real: str | os.PathLike, leave_open_on: tuple[type[BaseException], ...] = (), label: str | None = None,
           identity: str | None = None) -> Iterator[str]:
    """`open_resolved(real)`, then a path that reaches the file opened (Linux: /proc/self/fd/N, which every later
    open in this process follows to that same file, whatever happens to `real`), held open for the block. Where
    the system has no /proc, `real` itself (checked when opened; later opens are not).

    `leave_open_on`: errors after which a reader may still be running in a thread of its own (a decode that ran
    out of time): the descriptor then stays open for the life of the process, since its number, reused for another
    file, would hand that reader the wrong bytes. `label`, `identity`: as for `open_resolved`."""
    fd = open_resolved(real, label, identity)
    try:
        yield str(_PROC_FD / str(fd)) if _opened_name(fd) is not None else os.fspath(real)
    except leave_open_on:
        _LEFT_OPEN.append(fd)
        raise
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)


# ---- videos named by reference -------------------------------------------------------------------------------
MAX_REFERENCE_BYTES = 4096  # PATH_MAX: a longer reference names no file
SHOWN_CHARS = 48  # what an error quotes of a reference


def shown(reference: str) -> str:
    """A reference as an error quotes it: its first SHOWN_CHARS characters."""
    return repr(reference[:SHOWN_CHARS]) + ("..." if len(reference) > SHOWN_CHARS else "")


@dataclass(frozen=True)
class MediaRoots:
    """The directories under which a served request may name its video (VIDEO_URI): real, absolute paths. Empty
    (the default): every reference is refused."""

    roots: tuple[str, ...] = ()

    @classmethod
    def of(cls, dirs: Sequence[str | os.PathLike]) -> MediaRoots:
        """The operator's directories (`--media-root`), each an existing directory, as real paths."""
        out = []
        for d in dirs:
            real = os.path.realpath(d)
            if not os.path.isdir(real):
                raise InputError(f"media root {os.fspath(d)!r} is not a directory")
            out.append(real)
        return cls(tuple(dict.fromkeys(out)))

    @classmethod
    def from_parameter(cls, value: str | None) -> MediaRoots:
        """From the `media_roots` model parameter (`to_parameter`): a JSON list of absolute directories, "" for none.
        Anything else (a bare string, a relative path) is refused naming the parameter, never read as characters."""
        if not value:
            return cls()
        try:
            roots = json.loads(value)
        except ValueError:
            roots = None
        if not isinstance(roots, list) or not all(isinstance(r, str) and os.path.isabs(r) for r in roots):
            raise InputError(f"the media_roots parameter must be a JSON list of absolute directories, not {value!r}")
        return cls(tuple(roots))

    def to_parameter(self) -> str:
        return json.dumps(list(self.roots)) if self.roots else ""

    def __bool__(self) -> bool:
        return bool(self.roots)

    def contains(self, path: str | os.PathLike) -> bool:
        """Whether `path` (made absolute, symlinks followed) lies under a root: what a client checks before it
        sends a reference instead of the bytes."""
        try:
            return bool(self.roots) and confine(os.path.abspath(path), self.roots)[1]
        except (ValueError, OSError):
            return False

    def resolve(self, reference: str | bytes, name: str = "VIDEO_URI") -> Path:
        """The real path of a reference (an absolute path or a file:/// URI) inside a root; a PathRefusedError
        naming what is wrong otherwise (`name`: what the request called the reference). Nothing is opened: `open` and
        `pinned` check the file itself."""
        if not self.roots:
            raise ReferencesOffError(f"videos by reference ({name}) are off on this server: send the bytes, or start "
                                     "it with --media-root DIR")
        if isinstance(reference, bytes):
            if len(reference) > MAX_REFERENCE_BYTES:
                raise InvalidReferenceError(f"{name} is {len(reference)} bytes; at most {MAX_REFERENCE_BYTES}")
            reference = os.fsdecode(reference)  # a file name is bytes: any it holds are kept
        if len(os.fsencode(reference)) > MAX_REFERENCE_BYTES:
            raise InvalidReferenceError(f"{name} is over {MAX_REFERENCE_BYTES} bytes")
        try:
            path = local_path(reference)
        except ValueError as e:
            raise InvalidReferenceError(f"{name} {shown(reference)}: {e}") from None
        if not os.path.isabs(path):
            raise InvalidReferenceError(f"{name} {shown(reference)} is a relative path: name the video by its "
                                        "absolute path (or file:///...)")
        try:
            real, inside = confine(path, self.roots)
        except (ValueError, OSError) as e:
            raise InvalidReferenceError(f"{name} {shown(reference)} cannot be resolved ({type(e).__name__})"
                                        ) from None
        if not inside:
            raise OutsideRootsError(f"{name} {shown(reference)} lies outside the server's media roots "
                                    "(after '..' and symlinks)")
        return real

    def open(self, reference: str | bytes, identity: str | None = None) -> int:
        """`resolve`, then `open_resolved`: the descriptor of the regular file the reference names (the caller
        closes it)."""
        return open_resolved(self.resolve(reference), self.label(reference), identity)

    def pinned(self, reference: str | bytes, identity: str | None = None,
               leave_open_on: tuple[type[BaseException], ...] = ()) -> contextlib.AbstractContextManager[str]:
        """`resolve`, then `pinned`: a name of the opened file for the decoder, held open for the block."""
        return pinned(self.resolve(reference), leave_open_on, self.label(reference), identity)

    @staticmethod
    def label(reference: str | bytes) -> str:
        """How a refusal names a reference."""
        return f"VIDEO_URI {shown(os.fsdecode(reference))}"
