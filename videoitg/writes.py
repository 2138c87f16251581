"""How the product writes its files: a file is written whole and renamed into place (`write_whole`), or appended to
after its last line is checked (`append_lines`: a torn tail, left by a crash or a full disk, is set aside first);
nothing is written through a symbolic link or into a file that is not a regular one (`open_output`); a full disk, a
missing permission or a path of the wrong kind is one `OutputError` naming the path."""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from videoitg.errors import VideoITGError

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no room: the disk, the quota, the file-size limit
TORN = ".torn"  # what a torn tail is set aside in: `<file>.torn`, beside the file
_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
          stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


class OutputError(VideoITGError, OSError):
    """A file the product writes cannot be written: the disk is full, a permission is missing, or the path is a
    link or not a regular file. The message names the path; whatever was written before is whole. An OSError too,
    with the system's `errno` where there was one."""

    def __init__(self, message: str, code: int | None = None, path: str | os.PathLike | None = None) -> None:
        super().__init__(message)
        self.errno, self.filename, self.message = code, None if path is None else os.fspath(path), message

    def __str__(self) -> str:
        return self.message


def output_error(e: OSError, path: str | os.PathLike) -> OutputError:
    """`e`, raised writing `path`, as the one error a command reports."""
    if e.errno in FULL:
        return OutputError(f"no space left writing {os.fspath(path)} ({e.strerror}): what was written before is "
                           "whole; free space and run the same command again", e.errno, path)
    if e.errno == errno.ELOOP:
        return OutputError(f"{os.fspath(path)} is a symbolic link: files are never written through a link",
                           e.errno, path)
    return OutputError(f"cannot write {os.fspath(path)}: {e.strerror or e}", e.errno, path)


def _kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_output(path: str | os.PathLike, append: bool = False) -> int:
    """A descriptor of `path` for writing, created if absent (mode 0644), never truncated, never through a symbolic
    link (O_NOFOLLOW) and only if it is a regular file (a FIFO or a device is refused before anything is written,
    and the open does not block on a FIFO). `append`: writes go to its end, and it is opened for reading too (its
    last line is checked). The caller closes it. OutputError otherwise."""
    flags = ((os.O_RDWR | os.O_APPEND if append else os.O_WRONLY) | os.O_CREAT | os.O_NONBLOCK
             | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.EISDIR:
            raise OutputError(f"{os.fspath(path)} is a directory, not a file it can write") from None
        raise output_error(e, path) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{os.fspath(path)} is {_kind(st.st_mode)}, not a regular file: nothing is written "
                              "into it")
        os.set_blocking(fd, True)
    except OutputError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise output_error(e, path) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_whole(path: str | os.PathLike, data: bytes | str | Iterable[str], mode: int = 0o644) -> None:
    """`path` holding `data` (text as UTF-8; an iterable of texts is written as it is read), or left as it was:
    written to a temporary file beside it (`.<name>.tmp-<random>-<pid>`), synced and renamed over it (a symbolic link
    at `path` is replaced, never followed). A `path` of another kind (a directory, a FIFO) is refused. OutputError
    naming `path` on any failure; the temporary file never stays. `mode`: the new file's permissions (less the
    umask)."""
    path = Path(path)
    chunks = [data.encode() if isinstance(data, str) else data] if isinstance(data, (str, bytes)) else (
        c.encode("utf-8") for c in data)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise output_error(e, path) from None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputError(f"{path} is {_kind(st.st_mode)}, not a file it can write")
    tmp = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}-{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                     | getattr(os, "O_NOFOLLOW", 0), mode)
        try:
            buffered = bytearray()  # an iterable's many short texts gathered up to a MiB a write
            for chunk in chunks:
                if len(buffered) + len(chunk) > 1 << 20:
                    _write_all(fd, buffered)
                    buffered.clear()
                if len(chunk) > 1 << 20:
                    _write_all(fd, chunk)
                else:
                    buffered += chunk
            _write_all(fd, buffered)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise output_error(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    sync_dir(path.parent)


def write_png(fig: object, path: str | os.PathLike, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG at `path` (its folder made), written whole (`write_whole`); the figure closed."""
    import io

    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=dpi)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    write_whole(path, png.getvalue())
    return path


def sync_dir(path: str | os.PathLike) -> None:
    """fsync a directory, so a rename in it is on disk; nothing where the system cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _torn_start(fd: int, size: int) -> int:
    """Where the bytes after the last newline of a file of `size` bytes begin (0: it holds no newline)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        chunk = os.pread(fd, end - start, start)
        at = chunk.rfind(b"\n")
        if at >= 0:
            return start + at + 1
        end = start
    return 0


def append_lines(path: str | os.PathLike, lines: Iterable[str]) -> int:
    """Append `lines` (each without its newline) to `path` as whole lines. The file's last line is checked first:
    a torn one (bytes after its last newline, left by a crash or a full disk) is moved to `<path>.torn` and cut
    off, so nothing is appended to it; a write that fails midway is cut back, so the file ends with a whole line
    again. Writers of one file take turns (an exclusive lock for the whole step). Returns the bytes of a torn tail
    set aside (0: none). OutputError naming `path` on any failure."""
    body = "".join(line + "\n" for line in lines).encode("utf-8")
    fd = open_output(path, append=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two writers of one file: the check, the cut and the append are one step
        size = os.fstat(fd).st_size
        torn = 0
        if size and os.pread(fd, 1, size - 1) != b"\n":
            start = _torn_start(fd, size)
            tail = os.pread(fd, size - start, start)
            aside = open_output(f"{os.fspath(path)}{TORN}", append=True)
            try:
                _write_all(aside, tail + b"\n")
                os.fsync(aside)
            finally:
                os.close(aside)
            os.ftruncate(fd, start)
            size, torn = start, len(tail)
        try:
            _write_all(fd, body)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # no torn line of ours stays behind
            raise
        return torn
    except OutputError:  # already names its file (`<path>.torn`)
        raise
    except OSError as e:
        raise output_error(e, path) from None
    finally:
        os.close(fd)
