"""Where a manifest may point: every video must resolve to a place under an allowed root.

A manifest is data from someone else, so a row must not be able to make the workers read
`/etc/shadow`, escape a root through `../` or a symlink, or smuggle a remote fetch in through a
URI the user did not expect. Rules:
- Relative paths are resolved against the manifest's directory.
- Local paths (plain or `file://`) are resolved with symlinks followed; the real path must lie
  under one of the allowed directory roots (also resolved), and must be an existing regular file.
- `file://` URIs must be local (`file:///abs/path` or `file://localhost/abs/path`); any other
  host is rejected, as are query strings and fragments.
- Remote URIs (`http://`, `https://`, `s3://` ...) are accepted only when an allowed root is a URI
  prefix with the same scheme and host and the URI's normalised path lies under that prefix's
  path (`..` segments are never accepted in a URI).
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from videoitg.errors import InputError


class PathNotAllowedError(InputError):
    """A manifest row names a video outside the allowed roots, or in a form we do not accept."""


@dataclass(frozen=True)
class AllowedRoots:
    dirs: tuple[Path, ...]  # resolved local directories
    uri_prefixes: tuple[str, ...]  # e.g. "https://videos.example.com/bench/"

    @classmethod
    def build(cls, roots: list[str | Path]) -> AllowedRoots:
        dirs: list[Path] = []
        prefixes: list[str] = []
        for r in roots:
            s = str(r)
            parts = urlsplit(s)
            if parts.scheme and parts.scheme != "file" and len(parts.scheme) > 1:
                if not parts.netloc:
                    raise InputError(f"allowed root {s!r}: a URI root needs a host")
                if ".." in parts.path.split("/"):
                    raise InputError(f"allowed root {s!r} contains '..'")
                prefixes.append(s if s.endswith("/") else s + "/")
                continue
            p = Path(_local_path_of(s) if parts.scheme == "file" else s).expanduser()
            try:
                p = p.resolve(strict=True)
            except OSError as e:
                raise InputError(f"allowed root {s!r} does not exist") from e
            if not p.is_dir():
                raise InputError(f"allowed root {s!r} is not a directory")
            dirs.append(p)
        if not dirs and not prefixes:
            raise InputError("no allowed roots given")
        return cls(tuple(dirs), tuple(prefixes))

    def describe(self) -> list[str]:
        return [str(d) for d in self.dirs] + list(self.uri_prefixes)


def _local_path_of(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost"):
        raise PathNotAllowedError(f"file URI {uri!r} names a remote host {parts.netloc!r}")
    if parts.query or parts.fragment:
        raise PathNotAllowedError(f"file URI {uri!r} has a query or fragment")
    path = unquote(parts.path)
    if not path.startswith("/"):
        raise PathNotAllowedError(f"file URI {uri!r} is not absolute")
    return path


def resolve_video(value: str, roots: AllowedRoots, base_dir: Path) -> str:
    """The canonical location of a manifest's `video` value, or PathNotAllowedError saying why not.

    Returns a resolved absolute local path (as str) or the URI itself for an allowed remote root.
    """
    if not isinstance(value, str) or not value.strip():
        raise PathNotAllowedError("empty 'video' value")
    if "\x00" in value:
        raise PathNotAllowedError("'video' contains a NUL byte")
    parts = urlsplit(value)
    # One-letter "schemes" are Windows drive letters, not URIs.
    if parts.scheme and len(parts.scheme) > 1 and parts.scheme != "file":
        return _check_remote(value, roots)
    raw = _local_path_of(value) if parts.scheme == "file" else value
    p = Path(raw).expanduser()
    if not p.is_absolute():
        p = base_dir / p
    try:
        real = p.resolve(strict=True)
    except OSError as e:
        raise PathNotAllowedError(f"video {value!r} does not exist") from e
    if not any(real.is_relative_to(d) for d in roots.dirs):
        raise PathNotAllowedError(
            f"video {value!r} resolves to {str(real)!r}, outside the allowed roots {roots.describe()}"
        )
    if not real.is_file():
        raise PathNotAllowedError(f"video {value!r} is not a regular file")
    if not os.access(real, os.R_OK):
        raise PathNotAllowedError(f"video {value!r} is not readable")
    return str(real)


def _check_remote(value: str, roots: AllowedRoots) -> str:
    parts = urlsplit(value)
    if ".." in unquote(parts.path).split("/"):
        raise PathNotAllowedError(f"video URI {value!r} contains '..'")
    for prefix in roots.uri_prefixes:
        pp = urlsplit(prefix)
        if (parts.scheme, parts.netloc.lower()) != (pp.scheme, pp.netloc.lower()):
            continue
        norm = posixpath.normpath(unquote(parts.path) or "/")
        if (norm + "/").startswith(unquote(pp.path)) and norm + "/" != unquote(pp.path):
            return value
    raise PathNotAllowedError(
        f"video URI {value!r} is not under an allowed URI root (allowed: {roots.describe()})"
    )
