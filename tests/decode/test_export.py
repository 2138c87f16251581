"""Frames handed on: `decode_full_frames` gives the numbered frames at the video's size (the scoring decoder without
its squash), and `score --export-frames` writes exactly those frames as JPEGs with a chronological index."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.video import read_number, write_clip
from videoitg.commands.cli import main
from videoitg.decode import decode_full_frames, decode_video
from videoitg.errors import InputError
from videoitg.preprocess import resize_frame
from videoitg.sampling import SamplingParams

FEW = SamplingParams(num_frames=8, target_fps=5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "long_gop": write_clip(d / "seek.mp4", frames=250, gop=10, width=160, height=96),
        "bframes": write_clip(d / "bf.mp4", frames=60, gop=15, options={"preset": "fast", "bf": "3"}),
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=60, gop=12),
        "rot90": write_clip(d / "rot.mp4", frames=3, rotation=90, marker=True, width=96, height=64),
    }


@pytest.mark.parametrize("name", ["long_gop", "bframes", "vp9"])
def test_full_frames_are_the_numbered_frames_at_the_video_size(clips, name) -> None:
    want = [37, 3, 50, 50, 12] if name != "long_gop" else [241, 3, 120, 120, 7]  # any order, repeats allowed
    images = decode_full_frames(clips[name], want)
    width, height = (160, 96) if name == "long_gop" else (96, 64)
    assert [im.shape for im in images] == [(height, width, 3)] * len(want)
    assert all(im.dtype == np.uint8 for im in images)
    assert [read_number(im) for im in images] == want


def test_full_frames_are_what_scoring_decodes_before_its_squash(clips) -> None:
    """decode_video's uint8 frames are decode_full_frames' frames squashed to S x S by the same resize, bit for bit:
    one decoder, the same frames."""
    sampled = decode_video(clips["long_gop"], image_size=32, params=FEW, decoder="pyav", output="uint8")
    full = decode_full_frames(clips["long_gop"], sampled.frame_indices)
    squashed = np.stack([resize_frame(im, 32).transpose(2, 0, 1) for im in full])
    assert np.array_equal(squashed, sampled.pixel_values.numpy())


def test_full_frames_are_turned_upright(clips) -> None:
    (im,) = decode_full_frames(clips["rot90"], [0])
    assert im.shape == (96, 64, 3)  # 96 x 64 coded, displayed a quarter turn: 64 wide, 96 tall
    red = im[..., 0].astype(int) - im[..., 2].astype(int)  # the marker is red, top-left before rotation
    h, w = im.shape[0] // 2, im.shape[1] // 2
    quadrants = {"tl": red[:h, :w].mean(), "tr": red[:h, w:].mean(), "bl": red[h:, :w].mean(),
                 "br": red[h:, w:].mean()}
    assert max(quadrants, key=quadrants.get) == "bl"  # as decode_video turns it (tests/decode/test_pyav.py)
    sampled = decode_video(clips["rot90"], image_size=32, decoder="pyav", output="uint8")
    assert sampled.frame_indices == [0]
    squashed = resize_frame(im, 32).transpose(2, 0, 1).astype(int)
    # Squash then turn (decode_video) against turn then squash: the same picture within resampling rounding.
    assert np.abs(squashed - sampled.pixel_values[0].numpy().astype(int)).mean() < 0.1


def test_frame_numbers_outside_the_video_are_refused(clips) -> None:
    with pytest.raises(InputError, match="frame 60 is not in the video"):
        decode_full_frames(clips["vp9"], [3, 60])


def test_transform_is_applied_to_each_frame_as_decoded(clips) -> None:
    shapes = decode_full_frames(clips["long_gop"], [5, 200], transform=lambda im: im.shape)
    assert shapes == [(96, 160, 3), (96, 160, 3)]


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDEOITG_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize("size", [None, 80])
def test_score_exports_the_top_k_frames(home, clips, size) -> None:
    video = clips["long_gop"]  # 250 frames at 25 fps, 160 x 96: 10 sampled frames at 1 fps
    out, results = home / "frames", home / "r.jsonl"
    argv = ["score", str(video), "-i", "When is the picture brightest?", "--top-k", "4", "--output", str(results),
            "--export-frames", str(out)]
    assert main(argv + (["--frame-size", str(size)] if size else [])) == 0
    record = json.loads(results.read_text())
    index = json.loads((out / "index.json").read_text())
    frames = index["frames"]
    assert [f["frame"] for f in frames] == record["top_k"] == sorted(record["top_k"])  # chronological
    assert index["video"] == record["video_path"] and index["top_k"] == 4 and index["size"] == size
    by_frame = dict(zip(record["frame_indices"], zip(record["timestamps"], record["scores"], strict=True),
                        strict=True))
    ranked = record["index"]
    reference = decode_full_frames(video, [f["frame"] for f in frames])
    for f, ref in zip(frames, reference, strict=True):
        assert (f["timestamp"], f["score"]) == pytest.approx(by_frame[f["frame"]], abs=1e-6)
        assert f["rank"] == ranked.index(f["frame"]) + 1
        with Image.open(out / f["file"]) as im:
            assert im.format == "JPEG"
            got = np.asarray(im.convert("RGB"))
        assert (f["width"], f["height"]) == (got.shape[1], got.shape[0])
        if size is None:
            assert got.shape == ref.shape == (96, 160, 3)
            assert np.abs(got.astype(int) - ref.astype(int)).mean() < 0.5  # JPEG at quality 95, 4:4:4
        else:
            assert got.shape == (48, 80, 3)  # the longer side is 80, the aspect kept
        assert read_number(got) == f["frame"]  # the image is the frame the index names
    assert sorted(p.name for p in out.iterdir()) == sorted([f["file"] for f in frames] + ["index.json"])


def test_frame_size_needs_export_frames(home, clips, capsys) -> None:
    assert main(["score", str(clips["vp9"]), "-i", "q", "--frame-size", "64"]) == 2
    assert "--export-frames" in capsys.readouterr().err
