"""`videoitg.python_backend.references`: a video named by reference is read and hashed once by the top-level model,
and opened by the decode step only while it is still the file hashed."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clips import random_clip
from videoitg.decode.errors import NotAVideoError, TruncatedVideoError, VideoTooLargeError
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.paths import MediaChangedError, MediaRoots, ReferencesOffError
from videoitg.python_backend import references
from videoitg.python_backend.errors import client_fault, remember_verdict
from videoitg.python_backend.references import FileVideo, MediaReadError, decode_source, read_reference
from videoitg.python_backend.request import parse_request
from videoitg.python_backend.step_decoder import decode_whole
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams

TEXT = np.array([[b"when?"]], object)


def one(value: object) -> np.ndarray:
    return np.array([[value]], object)


def test_a_reference_is_resolved_hashed_and_decoded_from_the_file(tmp_path: Path) -> None:
    data = random_clip(tmp_path / "clip.mp4", seed=1, seconds=2)
    roots, uri = MediaRoots.of([tmp_path]), one(str(tmp_path / "clip.mp4").encode())
    limits = Limits().replace(max_bytes=10)  # the upload bound does not apply to a reference
    with pytest.raises(ReferencesOffError):
        parse_request({"VIDEO_URI": uri, "INSTRUCTION": TEXT}, limits=limits)
    with pytest.raises(InputError, match="one of VIDEO, VIDEO_DIGEST or VIDEO_URI"):
        parse_request({"VIDEO": one(b"v"), "VIDEO_URI": uri, "INSTRUCTION": TEXT}, limits=limits, media_roots=roots)
    req = parse_request({"VIDEO_URI": uri, "INSTRUCTION": TEXT}, limits=limits, media_roots=roots)
    assert req.video is None and req.reference == str((tmp_path / "clip.mp4").resolve())
    ref = read_reference(roots, req.reference, limits)
    assert ref.digest == video_digest(data)  # keyed by content, as the same bytes uploaded
    with pytest.raises(VideoTooLargeError, match="--max-reference-bytes"):
        read_reference(roots, req.reference, limits.replace(max_reference_bytes=10))
    sampling = SamplingParams(num_frames=4)
    by_reference = {"VIDEO_URI": one(ref.path.encode()), "VIDEO_VERSION": one(ref.identity.encode())}
    with decode_source(by_reference, roots) as video:
        assert isinstance(video, Path)
        by_file = decode_whole(video, 32, sampling, limits)
    with decode_source({"VIDEO": one(data)}, roots) as video:
        by_bytes = decode_whole(video, 32, sampling, Limits())
    assert np.array_equal(by_file["PIXEL_VALUES"], by_bytes["PIXEL_VALUES"])  # one decoder, the same bytes
    random_clip(tmp_path / "new.mp4", seed=2, seconds=2)
    os.replace(tmp_path / "new.mp4", tmp_path / "clip.mp4")  # replaced after the top-level model hashed it
    with pytest.raises(MediaChangedError):
        with decode_source(by_reference, roots):
            pass
    with pytest.raises(InputError, match="VIDEO_VERSION is 1048576 bytes; at most 256"):
        with decode_source({"VIDEO_URI": one(ref.path.encode()), "VIDEO_VERSION": one(b"1" * (1 << 20))}, roots):
            pass
    with pytest.raises(ReferencesOffError):  # the step checks a client's reference itself
        with decode_source({"VIDEO_URI": uri}, MediaRoots()):
            pass


def test_the_decode_step_takes_one_video_as_bytes_or_by_reference(tmp_path: Path) -> None:
    for inputs in ({}, {"VIDEO": one(b"v"), "VIDEO_URI": one(b"/x")}):
        with pytest.raises(InputError, match="send VIDEO .* or VIDEO_URI"):
            with decode_source(inputs, MediaRoots.of([tmp_path])):
                pass
    with pytest.raises(InputError, match="VIDEO must hold bytes"):
        with decode_source({"VIDEO": np.array([[1]], np.int64)}, MediaRoots()):
            pass


def _rewrite_in_place(path: Path, data: bytes) -> None:
    """`data` written over the file's bytes (same inode), as `cp` onto it would."""
    with path.open("r+b") as f:
        f.write(data)
        f.truncate()


def test_a_file_written_while_it_was_decoded_is_refused_never_judged(tmp_path: Path) -> None:
    """Catches: a video whose file changed while it was decoded, the decoder's failure on the new bytes remembered
    as the verdict on the content hashed before, so that the file put back whole is refused meanwhile."""
    clip = tmp_path / "clip.mp4"
    data = random_clip(clip, seed=3, seconds=2)
    roots, limits, sampling = MediaRoots.of([tmp_path]), Limits(), SamplingParams(num_frames=4)
    ref = read_reference(roots, str(clip), limits)
    by_reference = {"VIDEO_URI": one(ref.path.encode()), "VIDEO_VERSION": one(ref.identity.encode())}
    with pytest.raises(MediaChangedError, match="was written while it was decoded") as e:
        with decode_source(by_reference, roots) as video:
            _rewrite_in_place(clip, b"\x00" * len(data))  # the decode meets other bytes than those hashed
            decode_whole(video, 32, sampling, limits)
    assert not remember_verdict(e.value) and isinstance(e.value.__cause__, InputError)  # the decoder's, set aside

    def pinned(ref: FileVideo) -> dict[str, np.ndarray]:
        return {"VIDEO_URI": one(ref.path.encode()), "VIDEO_VERSION": one(ref.identity.encode())}

    _rewrite_in_place(clip, data)  # the whole file back: the same content, a new file identity
    again = read_reference(roots, str(clip), limits)
    assert again.digest == ref.digest
    with pytest.raises(MediaChangedError, match="was written while it was decoded"):
        with decode_source(pinned(again), roots) as video:  # decoded whole, then written: not to be cached
            decode_whole(video, 32, sampling, limits)
            _rewrite_in_place(clip, b"\x00" * len(data))
    _rewrite_in_place(clip, data)
    with decode_source(pinned(read_reference(roots, str(clip), limits)), roots) as video:
        by_file = decode_whole(video, 32, sampling, limits)["PIXEL_VALUES"]
    assert np.array_equal(by_file, decode_whole(data, 32, sampling, limits)["PIXEL_VALUES"])  # one decoder, one video
    _rewrite_in_place(clip, b"\x00" * len(data))  # a file that is not a video, unchanged while decoded: a verdict
    with pytest.raises(NotAVideoError) as verdict:
        with decode_source(pinned(read_reference(roots, str(clip), limits)), roots) as video:
            decode_whole(video, 32, sampling, limits)
    assert remember_verdict(verdict.value)


class _FailingReads:
    """A file whose reads fail as a failing disk's do (EIO), injected where the decode step reads it again."""

    def __enter__(self) -> _FailingReads:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def readinto(self, buf: bytearray) -> int:
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_a_file_that_cannot_be_read_to_its_end_is_the_servers_error(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """FFmpeg takes a read that fails (EIO) for the end of a cut video: the decode step's TruncatedVideoError was
    remembered for the content as the client's fault. The step reads the file again: one that cannot be read to its
    end is the server's MediaReadError, never remembered."""
    clip = tmp_path / "clip.mp4"
    random_clip(clip, seed=4, seconds=2)
    roots = MediaRoots.of([tmp_path])
    ref = read_reference(roots, str(clip), Limits())
    by_reference = {"VIDEO_URI": one(ref.path.encode()), "VIDEO_VERSION": one(ref.identity.encode())}
    monkeypatch.setattr(references, "open", lambda *a, **k: _FailingReads(), raising=False)
    with pytest.raises(MediaReadError, match="could not be read \\(Input/output error\\)") as e:
        with decode_source(by_reference, roots):
            raise TruncatedVideoError("the decoder's reading of the failed read")
    assert not remember_verdict(e.value) and not client_fault(e.value)
    with pytest.raises(VideoTooLargeError):  # a verdict on the size alone: nothing read again
        with decode_source(by_reference, roots):
            raise VideoTooLargeError("over the bound")
