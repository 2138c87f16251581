"""Paths named by requests and manifests are accepted only under configured allowed roots.

Resolution follows symlinks before the check, so neither `../` nor a symlink inside a root can reach outside
it; `file://` URIs are accepted only as plain local paths (no host part), other schemes are refused.
"""

from __future__ import annotations

import os
import re
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
