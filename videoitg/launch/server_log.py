"""The server log: tritonserver's output, the front's (copied in here, so a write the log cannot take is dropped
rather than ending the front), and the launcher's own notes; and what the launcher reads back from it (its tail, a
port tritonserver found taken, an exit timeout reached, a crash)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

FATAL_SIGNAL = re.compile(r"^Signal \((6|11)\) received\.$", re.M)  # tritonserver's own crash handler's first line


class ServerLog:
    """One server's log file at `path` (None: a temporary file, made when it is first opened)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else None
        self.file: IO[bytes] | None = None
        self._opened: tuple[int, int] | None = None  # (device, inode) of the file last opened at `path`

    def open(self) -> None:
        """Open for appending, unbuffered: a write that fails (a full disk) leaves nothing behind to fail again. A
        log that cannot be opened is said on stderr and tritonserver's output discarded: the server runs without its
        log rather than not at all."""
        if self.file is not None and self._still_there():
            return
        # Removed under the server (a temporary-file cleaner), told before a new one is made at the same path: the
        # new file may be given the removed one's inode number.
        removed = self._opened is not None and not self._still_there()
        self.close()
        try:
            if self.path is None:
                fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
                os.close(fd)
                self.path = Path(name)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "ab", buffering=0)  # closed by `close`
            st = os.fstat(self.file.fileno())
        except OSError as e:
            print(f"videoitg launcher: cannot open the server log {self.path or 'in ' + tempfile.gettempdir()}"
                  f" ({e.strerror or e}); tritonserver's output is discarded", file=sys.stderr, flush=True)
            return
        self._opened = (st.st_dev, st.st_ino)
        if removed:
            self.say(f"the server log {self.path} was removed; a new one is written there", who="launcher")

    def _still_there(self) -> bool:
        """Whether the open file is still the one at `path`."""
        try:
            st = os.stat(self.path) if self.path is not None else None
        except OSError:
            return False
        return st is not None and (st.st_dev, st.st_ino) == self._opened

    def say(self, msg: str, who: str = "launcher") -> None:
        """`note`, and the same line on stderr: what the operator must see without the log."""
        self.note(msg, who)
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(f"videoitg {who}: {msg}\n")
            sys.stderr.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None

    def note(self, msg: str, who: str = "watchdog") -> None:
        """A line in the log. Supervision never depends on it: a line the log cannot take (a full disk, a file-size
        limit) goes to stderr instead."""
        line = f"videoitg {who}: {msg}\n"
        try:
            if self.file is None:
                raise OSError("it could not be opened")
            self.file.write(line.encode())
        except (OSError, ValueError) as e:  # ValueError: closed under us by a stop
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.write(f"{line.rstrip()} (the server log {self.path} did not take it: "
                                 f"{getattr(e, 'strerror', None) or e})\n")
                sys.stderr.flush()

    def copy_from(self, pipe: Any) -> None:
        """Copy a process's output pipe (the front's) into the log until it ends; what the log cannot take is
        dropped."""
        fd = pipe.fileno()
        try:
            while chunk := os.read(fd, 1 << 16):
                log = self.file
                if log is not None:
                    with contextlib.suppress(OSError, ValueError):  # ValueError: closed by a stop
                        log.write(chunk)
        except OSError:
            pass
        finally:
            pipe.close()

    def size(self) -> int:
        try:
            return self.path.stat().st_size if self.path is not None else 0
        except OSError:
            return 0

    def tail(self, n_chars: int = 4000) -> str:
        """The log's last `n_chars` bytes as text ('' where it cannot be read)."""
        try:
            size = self.path.stat().st_size if self.path is not None else 0
        except OSError:
            return ""
        return self.since(max(0, size - n_chars))

    def since(self, offset: int) -> str:
        """The log from byte `offset` on, read only where it is a regular file ('' where it cannot be read)."""
        return self.read_from(offset).decode(errors="replace")

    def read_from(self, offset: int) -> bytes:
        """The log's bytes from `offset` on (b'' where it is not a regular file or cannot be read)."""
        try:
            if self.path is None or not self.path.is_file():
                return b""
            with self.path.open("rb") as f:
                f.seek(offset)
                return f.read()
        except OSError:
            return b""

    def lost_port(self, since: int, ports: tuple[int, ...]) -> int | None:
        """One of `ports` (tritonserver's own) it found in use, from the log written since byte `since`."""
        for m in re.finditer(r"Socket '[^']*:(\d+)' already in use", self.since(since)):
            if int(m.group(1)) in ports:
                return int(m.group(1))
        return None

    def fatal_signal(self, since: int) -> int | None:
        """The fatal signal tritonserver's handler reported in the log written since byte `since` (SIGSEGV, SIGABRT:
        "Signal (11) received.", then a stack trace and death by that signal), else None. SIGINT and SIGTERM, its
        graceful stops, print the same words with their own numbers."""
        m = FATAL_SIGNAL.search(self.since(since))
        return int(m.group(1)) if m else None

    def exit_timeout_expired(self) -> bool:
        """Whether the last stop reached tritonserver's exit timeout with work still running (connections or
        requests in flight, which were then cut; tritonserver exits 1 for that alone)."""
        tail = self.tail()
        return "Exit timeout expired" in tail[tail.rfind("Signal (2) received"):]
