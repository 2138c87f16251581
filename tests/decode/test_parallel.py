"""Keyframe-parallel decoding equals the serial decoder bit for bit; uint8 frames normalised later equal the float
path; the frame stream hands over finished frames in order, propagates errors and can be cancelled; the Scorer's
overlapped decode + vision path gives the same features as the sequential one."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.video import read_number, truncate, write_clip
from videoitg.decode import FrameStream, TruncatedVideoError, decode_video, parallel, stream_video
from videoitg.decode.budget import Deadline
from videoitg.decode.container import build_index, check_source, header_info, open_container, select_video_stream
from videoitg.decode.structs import DecodeLimits
from videoitg.errors import InputError
from videoitg.pipeline.scorer import Scorer
from videoitg.preprocess import pixel_values
from videoitg.sampling import SamplingParams, sample_frame_indices
from videoitg.train.tiny_tokenizer import build_tiny_checkpoint

S = 32
MANY = SamplingParams(num_frames=40, target_fps=12.5)  # every other frame of a 25 fps clip


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("par")
    return {
        "gop10": write_clip(d / "gop10.mp4", frames=200, gop=10),
        # B-frames with a pyramid: the skipped non-reference frames differ between GOP pieces
        "bframes": write_clip(d / "bf.mp4", frames=200, gop=25, options={"preset": "medium", "bf": "3"}),
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=120, gop=12),
        "one_gop": write_clip(d / "one.mp4", frames=60, gop=250),
        "rot90": write_clip(d / "rot.mp4", frames=50, gop=5, rotation=90, marker=True),
    }


def _index(path: Path):
    src = check_source(path, DecodeLimits())
    with open_container(src) as c:
        s = select_video_stream(c, "x")
        return build_index(c, s, header_info(c, s)["fps"], DecodeLimits(), Deadline(None), "x")


def test_pieces_cut_at_gop_boundaries_and_cover_every_frame(clips: dict[str, Path]) -> None:
    index = _index(clips["gop10"])
    numbers = sample_frame_indices(index.total, index.fps, MANY)
    for k in (1, 2, 3, 7, 100):
        pieces = parallel.plan_pieces(index, numbers, k)
        assert 1 <= len(pieces) <= k
        assert pieces[0][0] == 0 and pieces[-1][1] == len(numbers)
        assert all(a < b for a, b in pieces) and all(p[1] == q[0] for p, q in zip(pieces[:-1], pieces[1:], strict=True))
        for a, _ in pieces[1:]:  # a cut never separates frames of one GOP
            before = index.keyframe_at_or_before(index.pts[numbers[a - 1]])
            assert index.keyframe_at_or_before(index.pts[numbers[a]]) != before
    assert len(parallel.plan_pieces(index, numbers, 100)) == len(parallel.gop_groups(index, numbers)) == 20


@pytest.mark.parametrize("name", ["gop10", "bframes", "vp9", "one_gop", "rot90"])
def test_parallel_decode_is_bit_identical_to_serial(clips: dict[str, Path], name: str) -> None:
    serial = decode_video(clips[name], image_size=S, params=MANY, workers=1, output="uint8")
    ref = [read_number(f.permute(1, 2, 0).numpy()) for f in serial.pixel_values]
    if name != "rot90":
        assert ref == serial.frame_indices  # the serial decoder itself returns the numbered frames
    for workers in (2, 3, 5):
        par = decode_video(clips[name], image_size=S, params=MANY, workers=workers, output="uint8")
        assert par.frame_indices == serial.frame_indices and par.timestamps == serial.timestamps
        assert torch.equal(par.pixel_values, serial.pixel_values), (name, workers)


def test_uint8_frames_normalised_later_equal_the_float_path(clips: dict[str, Path]) -> None:
    f32 = decode_video(clips["bframes"], image_size=S, params=MANY, workers=2)
    u8 = decode_video(clips["bframes"], image_size=S, params=MANY, workers=2, output="uint8")
    assert f32.pixel_values.dtype == torch.float32 and u8.pixel_values.dtype == torch.uint8
    assert torch.equal(pixel_values(u8.pixel_values), f32.pixel_values)
    assert pixel_values(u8.pixel_values, torch.float16).dtype == torch.float16
    assert torch.equal(pixel_values(u8.pixel_values, torch.float16), f32.pixel_values.half())


def test_bad_arguments_are_typed_errors(clips: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="output"):
        decode_video(clips["gop10"], output="int8")
    with pytest.raises(InputError, match="workers"):
        decode_video(clips["gop10"], workers=0)


def test_a_damaged_piece_fails_the_request_like_the_serial_decoder(clips: dict[str, Path], tmp_path: Path) -> None:
    bad = truncate(clips["gop10"], tmp_path / "cut.mp4", 0.6)
    for workers in (1, 3):
        with pytest.raises(TruncatedVideoError):
            decode_video(bad, image_size=S, params=MANY, workers=workers)


def test_stream_hands_over_the_frames_in_order(clips: dict[str, Path]) -> None:
    whole = decode_video(clips["rot90"], image_size=S, params=MANY, output="uint8")
    stream = stream_video(clips["rot90"], image_size=S, params=MANY, output="uint8", workers=2)
    assert len(stream) == len(whole)
    chunks = list(stream.chunks(7))
    assert [len(c) for c in chunks[:-1]] == [7] * (len(chunks) - 1)
    assert all(isinstance(c, np.ndarray) for c in chunks)  # PyAV's frames: no torch in a streamed decode
    assert np.array_equal(np.concatenate(chunks), whole.pixel_values.numpy())  # turned upright, like the whole
    assert torch.equal(stream.result().pixel_values, whole.pixel_values)
    again = list(stream.chunks(7))  # read once the decode is over: the same numpy frames, not the result's tensor
    assert all(isinstance(c, np.ndarray) for c in again)
    assert np.array_equal(np.concatenate(again), np.concatenate(chunks))


def test_stream_chunks_arrive_before_the_decode_ends() -> None:
    # Driven by hand: a consumer gets frames 0..3 while the producer has not finished.
    stream = FrameStream()
    out = np.arange(10 * 3 * 2 * 2, dtype=np.uint8).reshape(10, 3, 2, 2)
    stream.begin(out)
    stream.advance(4, 0)
    it = stream.chunks(4)
    assert np.array_equal(next(it), out[:4])
    got: list[np.ndarray] = []
    t = threading.Thread(target=lambda: got.append(next(it)))
    t.start()
    t.join(0.2)
    assert t.is_alive()  # frames 4..7 are not final yet
    stream.advance(8, 0)
    t.join(5)
    assert np.array_equal(got[0], out[4:8])


def test_stream_errors_reach_the_consumer(clips: dict[str, Path], tmp_path: Path) -> None:
    stream = stream_video(tmp_path / "missing.mp4")
    with pytest.raises(Exception, match="not found"):
        list(stream.chunks(4))
    bad = truncate(clips["gop10"], tmp_path / "cut.mp4", 0.6)
    stream = stream_video(bad, image_size=S, params=MANY, workers=2)
    with pytest.raises(TruncatedVideoError):
        list(stream.chunks(4))


def test_a_consumer_that_stops_cancels_the_decode() -> None:
    stream = FrameStream()
    stream.begin(np.zeros((10, 3, 2, 2), dtype=np.uint8))
    stream.advance(2, 0)
    it = stream.chunks(2)
    next(it)
    it.close()  # the consumer leaves the loop (e.g. its own error)
    with pytest.raises(parallel.StreamCancelledError):
        stream.advance(4, 0)


def test_scorer_overlapped_features_equal_the_sequential_ones(tmp_path: Path, clips: dict[str, Path]) -> None:
    ckpt = build_tiny_checkpoint(tmp_path / "ckpt")
    scorer = Scorer(ckpt, sampling=SamplingParams(num_frames=24, target_fps=12.5), chunk_frames=5)
    seq = scorer.video_features(scorer.load_video(clips["bframes"]))
    over = scorer.stream_features(clips["bframes"])
    assert over.frame_indices == seq.frame_indices and over.timestamps == seq.timestamps
    assert torch.equal(over.visual, seq.visual)
    r = scorer.score(clips["bframes"], "a red circle")
    assert r.frame_indices == seq.frame_indices
