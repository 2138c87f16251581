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
from videoitg.errors import InputError
from videoitg.paths import MediaChangedError, MediaRoots, file_identity, shown
from videoitg.request.limits import Limits

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
    or rewritten since is refused, so features are never cached under another content's digest."""
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
    with roots.pinned(bytes_value(uri, VIDEO_URI), identity, leave_open_on=(DecodeTimeoutError,)) as path:
        yield Path(path)
