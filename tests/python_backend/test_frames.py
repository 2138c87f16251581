"""`videoitg.python_backend.frames`: the checks of a request's FRAMES / FRAME_SIZE (read by
`request.parse_options`), and the served frames (the top-K frames of a result, decoded as `score --export-frames`
decodes them) in the served format, round-tripped through `videoitg.contract.tensors`. No server."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.video import read_number, write_clip
from videoitg.contract.tensors import frames_from_outputs
from videoitg.decode import decode_full_frames
from videoitg.decode.export import FramesTooLargeError, resize_longer_side
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.outputs import GroundingResult
from videoitg.paths import MediaChangedError, MediaRoots
from videoitg.python_backend.frames import check_frames, served_frames
from videoitg.python_backend.references import read_reference
from videoitg.python_backend.request import parse_options
from videoitg.request.limits import Limits
from videoitg.request.options import MAX_FRAME_SIZE, RequestOptions


def _s(value: str | bytes) -> np.ndarray:
    return np.array([[value.encode() if isinstance(value, str) else value]], object)


def _i(value: int) -> np.ndarray:
    return np.array([[value]], np.int32)


def test_frames_are_off_unless_asked() -> None:
    assert parse_options({}).frames is None
    check_frames(parse_options({}), False)  # a digest-only request that does not ask is untouched


def test_frames_formats_and_sizes() -> None:
    assert parse_options({"FRAMES": _s("jpeg")}) == RequestOptions(frames="jpeg")
    assert parse_options({"FRAMES": _s("uint8"), "FRAME_SIZE": _i(0)}) == RequestOptions(frames="uint8", frame_size=0)
    assert parse_options({"FRAMES": _s("uint8"), "FRAME_SIZE": _i(448)}).frame_size == 448
    assert parse_options({"FRAMES": _s("jpeg"), "FRAME_SIZE": _i(MAX_FRAME_SIZE)}).frame_size == MAX_FRAME_SIZE


@pytest.mark.parametrize(("frames", "size", "match"), [
    (_s("png"), None, 'FRAMES must be one of jpeg, uint8, got "png"'),
    (_s(""), None, "FRAMES must be one of"),
    (_s(b"x" * (1 << 20)), None, "FRAMES is 1048576 bytes"),
    (_s("jpeg"), _i(-1), "FRAME_SIZE must be an integer from 0 .* got -1"),
    (_s("jpeg"), _i(MAX_FRAME_SIZE + 1), f"FRAME_SIZE must be .* got {MAX_FRAME_SIZE + 1}"),
    (None, _i(448), "FRAME_SIZE sizes the frames FRAMES asks for"),
    (np.array([[b"jpeg", b"jpeg"]], object), None, "FRAMES must hold exactly one value"),
])
def test_bad_frames_inputs_are_refused_naming_the_input(frames, size, match) -> None:
    inputs = {k: v for k, v in (("FRAMES", frames), ("FRAME_SIZE", size)) if v is not None}
    with pytest.raises(InputError, match=match) as e:
        parse_options(inputs)
    assert len(str(e.value)) < 200  # a long field is never echoed back


def test_frames_need_the_video_bytes_or_its_file() -> None:
    with pytest.raises(InputError, match="FRAMES: .*send VIDEO .*or VIDEO_URI .*not VIDEO_DIGEST alone"):
        check_frames(RequestOptions(frames="jpeg"), False)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = write_clip(tmp_path_factory.mktemp("clip") / "c.mp4", frames=100, gop=10, width=160, height=96)
    return Path(path).read_bytes()


def _result(frame_indices: list[int]) -> GroundingResult:
    logits = [float((7 * i) % 5) - 2 for i in range(len(frame_indices))]
    return GroundingResult(logits, frame_indices, [n / 25 for n in frame_indices])


@pytest.mark.parametrize("size", [None, 80])
def test_served_frames_are_the_decoders_top_k_frames(clip: bytes, size: int | None) -> None:
    result = _result(list(range(0, 100, 10)))
    top = result.top_k_frames(4)
    reference = [resize_longer_side(im, size) for im in decode_full_frames(clip, top)]
    options = RequestOptions(top_k=4, frames="uint8", frame_size=size)
    pixels = frames_from_outputs(served_frames(clip, result, options, Limits()))
    assert len(pixels) == 4
    for got, ref, n in zip(pixels, reference, top, strict=True):  # chronological, uint8 exactly
        assert got.dtype == np.uint8 and np.array_equal(got, ref)
        assert got.shape == ((96, 160, 3) if size is None else (48, 80, 3))
        assert read_number(got) == n
    options = RequestOptions(top_k=4, frames="jpeg", frame_size=size)
    jpegs = frames_from_outputs(served_frames(clip, result, options, Limits()))
    for data, ref in zip(jpegs, reference, strict=True):
        got = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert got.shape == ref.shape and np.abs(got.astype(int) - ref.astype(int)).mean() < 0.5


def test_frames_of_a_video_by_reference_are_those_of_its_bytes_from_the_very_file_hashed(clip: bytes,
                                                                                        tmp_path: Path) -> None:
    """A video named by reference (VIDEO_URI) gives the frames its bytes give, under the bounds of a reference (the
    upload bound does not apply), from the file the top level hashed: replaced since, it is refused."""
    path = tmp_path / "v.mp4"
    path.write_bytes(clip)
    # 16 x 10 pixels
    result, options = _result(list(range(0, 100, 10))), RequestOptions(top_k=3, frames="uint8", frame_size=16)
    roots, limits = MediaRoots.of([tmp_path]), Limits().replace(max_bytes=3 * 16 * 10 * 3)  # under the clip's size
    assert len(clip) > limits.decode.max_bytes
    ref = read_reference(roots, str(path.resolve()), limits)
    want = frames_from_outputs(served_frames(clip, result, options, Limits()))
    got = frames_from_outputs(served_frames(ref, result, options, limits, roots))
    assert len(got) == 3 and all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
    path.write_bytes(clip[:-10] + b"0" * 10)  # rewritten after it was hashed
    with pytest.raises(MediaChangedError):
        served_frames(ref, result, options, limits, roots)


def test_served_frames_are_bounded_by_max_video_bytes(clip: bytes) -> None:
    result = _result(list(range(0, 100, 10)))
    limits = Limits(decode=DecodeLimits(max_bytes=2 * 96 * 160 * 3))  # two full frames, the clip fits
    assert len(frames_from_outputs(served_frames(clip, result, RequestOptions(top_k=2, frames="uint8"), limits))) == 2
    with pytest.raises(FramesTooLargeError, match=r"FRAMES: the top-3 frames hold more than 92160 bytes "
                       r"\(max_video_bytes.*TOP_K.*FRAME_SIZE"):
        served_frames(clip, result, RequestOptions(top_k=3, frames="uint8"), limits)
    smaller = RequestOptions(top_k=3, frames="uint8", frame_size=80)
    assert len(frames_from_outputs(served_frames(clip, result, smaller, limits))) == 3


def test_the_served_frames_end_with_a_trim_answered_or_refused(monkeypatch, clip: bytes) -> None:
    """What their decode freed goes back to the system (`videoitg.decode.heap`): the top-level model, which decodes
    them, otherwise grew about 8 MiB a minute in the soak."""
    from videoitg.python_backend import frames

    trims: list[int] = []
    monkeypatch.setattr(frames, "trim_freed_memory", lambda: trims.append(1) or True)
    result = _result(list(range(0, 100, 10)))
    served_frames(clip, result, RequestOptions(top_k=2, frames="jpeg"), Limits())
    assert trims == [1]
    with pytest.raises(FramesTooLargeError):
        served_frames(clip, result, RequestOptions(top_k=3, frames="uint8"),
                      Limits(decode=DecodeLimits(max_bytes=2 * 96 * 160 * 3)))
    assert trims == [1, 1]


def test_no_frames_in_an_answer_that_did_not_ask() -> None:
    assert frames_from_outputs({"SCORES": np.zeros(3, np.float32)}) is None
