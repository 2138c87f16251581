"""`videoitg.python_backend.references`: a video named by reference is read and hashed once by the top-level model,
and opened by the decode step only while it is still the file hashed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.clips import random_clip
from videoitg.decode.errors import VideoTooLargeError
from videoitg.digest import video_digest
from videoitg.errors import InputError
from videoitg.paths import MediaChangedError, MediaRoots, ReferencesOffError
from videoitg.python_backend.decoding import decode_whole
from videoitg.python_backend.references import decode_source, read_reference
from videoitg.python_backend.request import parse_request
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
