"""`videoitg.python_backend.steps`: the request checks a client's fields meet first."""

from __future__ import annotations

import numpy as np
import pytest
from videoitg.python_backend.steps import MAX_OPTION_BYTES, parse_request

from videoitg.digest import video_digest
from videoitg.errors import InputError

TEXT = np.array([[b"when?"]], object)


def test_a_digest_is_matched_whole() -> None:
    d = video_digest(b"v")
    assert parse_request(None, TEXT, None, 8, video_digest=np.array([[d.encode()]], object)).digest == d
    for bad in (d + "\n", d + " ", "\n" + d):
        with pytest.raises(InputError, match="VIDEO_DIGEST must be"):
            parse_request(None, TEXT, None, 8, video_digest=np.array([[bad.encode()]], object))


def test_a_long_ranking_rule_is_refused_without_being_echoed() -> None:
    rule = b"x" * (4 << 20)
    with pytest.raises(InputError) as e:
        parse_request(np.array([[b"vid"]], object), TEXT, None, 8, ranking_rule=np.array([[rule]], object))
    assert "RANKING_RULE" in str(e.value) and len(str(e.value)) < 200
    with pytest.raises(InputError) as e:  # within the byte bound but unknown: quoted, short
        parse_request(np.array([[b"vid"]], object), TEXT, None, 8,
                      ranking_rule=np.array([[b"y" * MAX_OPTION_BYTES]], object))
    assert "unknown ranking rule" in str(e.value) and len(str(e.value)) < 200


def test_an_oversized_upload_names_the_flag_and_the_reference_path() -> None:
    from videoitg.decode.errors import VideoTooLargeError
    from videoitg.limits import Limits

    with pytest.raises(VideoTooLargeError, match="--max-video-bytes") as e:
        parse_request(np.array([[b"v" * 100]], object), TEXT, None, 8, Limits().replace(max_bytes=10))
    assert "VIDEOITG_MAX_VIDEO_BYTES" in str(e.value) and "VIDEO_URI" in str(e.value)


def test_a_reference_is_resolved_hashed_and_decoded_from_the_file(tmp_path) -> None:
    import os
    from pathlib import Path

    from videoitg.python_backend.steps import decode_source, decode_whole, read_reference

    from tests.support.video import random_clip
    from videoitg.decode.errors import VideoTooLargeError
    from videoitg.limits import Limits
    from videoitg.paths import MediaChangedError, MediaRoots, ReferencesOffError
    from videoitg.sampling import SamplingParams

    data = random_clip(tmp_path / "clip.mp4", seed=1, seconds=2)
    roots, uri = MediaRoots.of([tmp_path]), np.array([[str(tmp_path / "clip.mp4").encode()]], object)
    limits = Limits().replace(max_bytes=10)  # the upload bound does not apply to a reference
    with pytest.raises(ReferencesOffError):
        parse_request(None, TEXT, None, 8, limits, video_uri=uri)
    with pytest.raises(InputError, match="one of VIDEO, VIDEO_DIGEST or VIDEO_URI"):
        parse_request(np.array([[b"v"]], object), TEXT, None, 8, limits, video_uri=uri, media_roots=roots)
    req = parse_request(None, TEXT, None, 8, limits, video_uri=uri, media_roots=roots)
    assert req.video is None and req.reference == str((tmp_path / "clip.mp4").resolve())
    ref = read_reference(roots, req.reference, limits)
    assert ref.digest == video_digest(data)  # keyed by content, as the same bytes uploaded
    with pytest.raises(VideoTooLargeError, match="--max-reference-bytes"):
        read_reference(roots, req.reference, limits.replace(max_reference_bytes=10))
    sampling = SamplingParams(num_frames=4)
    version = np.array([[ref.identity.encode()]], object)
    with decode_source(None, np.array([[ref.path.encode()]], object), version, roots) as video:
        assert isinstance(video, Path)
        by_file = decode_whole(video, 32, sampling, limits)
    with decode_source(np.array([[data]], object), None, None, roots) as video:
        by_bytes = decode_whole(video, 32, sampling, Limits())
    assert np.array_equal(by_file["PIXEL_VALUES"], by_bytes["PIXEL_VALUES"])
    random_clip(tmp_path / "new.mp4", seed=2, seconds=2)
    os.replace(tmp_path / "new.mp4", tmp_path / "clip.mp4")  # replaced after the top-level model hashed it
    with pytest.raises(MediaChangedError):
        with decode_source(None, np.array([[ref.path.encode()]], object), version, roots):
            pass
    with pytest.raises(InputError, match="VIDEO_VERSION is 1048576 bytes; at most 256"):
        with decode_source(None, np.array([[ref.path.encode()]], object), np.array([[b"1" * (1 << 20)]], object),
                           roots):
            pass
    with pytest.raises(ReferencesOffError):  # the step checks a client's reference itself
        with decode_source(None, uri, None, MediaRoots()):
            pass


def test_step_decoder_follows_the_repository_parameter_and_the_instance_device() -> None:
    """The decode step's `decoder` parameter and the device Triton gave its instance
    (`videoitg.engines.runtimes.instance_device`) -> decode_video's decoder and device, and DALI's self-test device."""
    from videoitg.python_backend.steps import StepDecoder

    from videoitg.engines.runtimes import instance_device

    gpu1 = instance_device({"model_instance_kind": "GPU", "model_instance_device_id": "1"}, "cpu")
    assert StepDecoder.of("dali", gpu1) == StepDecoder("dali-gpu", "cuda:1", "mixed")
    assert StepDecoder.of("dali", gpu1).device_id() == 1
    assert StepDecoder.of("dali", instance_device({"model_instance_kind": "CPU"}, "cuda")) == \
        StepDecoder("dali-cpu", None, "cpu")
    for parameter in ("python", ""):
        assert StepDecoder.of(parameter, gpu1) == StepDecoder("auto")  # PyAV, uint8 frames, no self-test
    assert StepDecoder.of("python", "cpu").dali_device is None and StepDecoder.of("python", "cpu").device_id() == 0
    with pytest.raises(InputError, match="decoder must be one of python, dali"):
        StepDecoder.of("nvdec", "cpu")
