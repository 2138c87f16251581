"""Videos named by reference (VIDEO_URI): the top-level model reads and hashes the file once (`read_reference`), the
decode step opens it again only if it is still that file (`decode_source`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from videoitg.contract.protocol import VIDEO, VIDEO_URI, VIDEO_VERSION
from videoitg.decode.errors import DecodeTimeoutError, EmptyVideoError, VideoTooLargeError
from videoitg.digest import video_file_digest
from videoitg.errors import InputError, VideoITGError
from videoitg.paths import MediaChangedError, MediaRoots, file_identity, shown
from videoitg.request.limits import Limits

from .errors import verdict_names
from .request import Inputs, bytes_value

MAX_VERSION_BYTES = 256  # VIDEO_VERSION, the `videoitg.paths.file_identity` of a referenced file


@dataclass(frozen=True)
class FileVideo:
    """A video named by reference, as read once: its real path, the digest of its content and the identity of the
    file hashed (`videoitg.paths.file_identity`), which the decode step checks again when it opens the file."""

    path: str
    digest: str
    identity: str


def read_reference(roots: MediaRoots, reference: str, limits: Limits) -> FileVideo:
    """Open a referenced video under `roots`, bound its size (`max_reference_bytes`) and hash its content: the
    feature cache keys it by what it holds, never by its name. A file written while it was hashed is refused."""
    fd = roots.open(reference)
    try:
        st = os.fstat(fd)
        if st.st_size == 0:
            raise EmptyVideoError(f"VIDEO_URI {shown(reference)} is empty (0 bytes)")
        if st.st_size > limits.max_reference_bytes:
            raise VideoTooLargeError(f"VIDEO_URI {shown(reference)} is {st.st_size} bytes, over the "
                                     f"{limits.max_reference_bytes} byte limit of a video by reference "
                                     "(--max-reference-bytes, env VIDEOITG_MAX_REFERENCE_BYTES)")
        digest = video_file_digest(fd)
        identity = file_identity(st)
        if file_identity(os.fstat(fd)) != identity:
            raise MediaChangedError(f"VIDEO_URI {shown(reference)} was written while it was read: send the "
                                    "request again once it is complete")
    finally:
        os.close(fd)
    return FileVideo(reference, digest, identity)


@contextlib.contextmanager
def pinned_reference(roots: MediaRoots, video: FileVideo) -> Iterator[Path]:
    """The file `read_reference` hashed, opened again only if it is still that file (replaced or rewritten since:
    MediaChangedError), held open for the block and named for the decoder."""
    with roots.pinned(video.path, video.identity, leave_open_on=(DecodeTimeoutError,)) as path:
        yield Path(path)


@contextlib.contextmanager
def decode_source(inputs: Inputs, roots: MediaRoots) -> Iterator[bytes | Path]:
    """The decode step's video: VIDEO (the bytes) or VIDEO_URI (a file under `roots`, checked here as the top-level
    model checks it, since a client may call this step directly), held open for the block and decoded through a
    name of the opened file. VIDEO_VERSION, when given, is the `file_identity` the caller hashed: a file replaced
    or rewritten since is refused, so features are never cached under another content's digest. A file written
    while it was decoded is refused when the block ends (MediaChangedError, transient), and a failed decode of a
    file that cannot be read to its end is the server's MediaReadError: a decode's error is then a verdict on the
    bytes hashed, or none (`errors.remember_verdict`)."""
    video, uri, version = inputs.get(VIDEO), inputs.get(VIDEO_URI), inputs.get(VIDEO_VERSION)
    if (video is None) == (uri is None):
        raise InputError("send VIDEO (the encoded video) or VIDEO_URI (a file under a media root)")
    if video is not None:
        yield bytes_value(video, VIDEO)
        return
    identity = None
    if version is not None:
        raw = bytes_value(version, VIDEO_VERSION)
        if len(raw) > MAX_VERSION_BYTES:  # a `file_identity` is a few numbers; never echoed
            raise InputError(f"VIDEO_VERSION is {len(raw)} bytes; at most {MAX_VERSION_BYTES}")
        identity = raw.decode("ascii", "replace")
    reference = bytes_value(uri, VIDEO_URI)
    with roots.pinned(reference, identity, leave_open_on=(DecodeTimeoutError,)) as path:
        label, opened = roots.label(reference), file_identity(os.stat(path))
        try:
            yield Path(path)
        except DecodeTimeoutError:  # transient already; the reader may still hold the file
            raise
        except Exception as e:
            other = _as_decoded(path, opened, label, read=_read_again(e))
            if other is None:
                raise
            raise other from e
        if _changed(path, opened):  # decoded, but from bytes other than those hashed: not to be cached
            raise _written(label)


class MediaReadError(VideoITGError):
    """A video by reference could not be read (an I/O error of the storage): the server's fault, never a verdict
    on the video."""


READ_CHUNK = 1 << 24


def _written(label: str) -> MediaChangedError:
    return MediaChangedError(f"{label} was written while it was decoded: send the request again once it is complete")


def _changed(path: str, opened: str) -> bool:
    """Whether the file held open at `path` (a name of the descriptor, `MediaRoots.pinned`) is no longer the file
    `opened` (its `file_identity`) describes: written, cut or replaced."""
    try:
        return file_identity(os.stat(path)) != opened
    except OSError:
        return True


def _read_again(error: Exception) -> bool:
    """Whether a decode's `error` may hide an I/O error (the decoder takes a read that fails for the end of a cut
    video): a verdict on the content that is not about its size, which needs no read."""
    return type(error).__name__ in verdict_names() and not isinstance(error, VideoTooLargeError)


def _as_decoded(path: str, opened: str, label: str, read: bool) -> Exception | None:
    """What a failed decode of the file held at `path` says, when it says something other than the decoder's
    verdict: MediaChangedError when the file changed while it was decoded (the bytes decoded are not the bytes
    hashed); with `read`, MediaReadError when the file cannot be read to its end (an I/O error the decoder may
    have taken for a cut video). None: the file is unchanged (and read whole), the decoder's error is a verdict on
    its content."""
    if _changed(path, opened):
        return _written(label)
    if not read:
        return None
    try:
        with open(path, "rb", buffering=0) as f:
            buf = bytearray(READ_CHUNK)
            while f.readinto(buf):
                pass
    except OSError as e:
        return MediaReadError(f"{label} could not be read ({e.strerror or e})")
    if _changed(path, opened):
        return _written(label)
    return None
