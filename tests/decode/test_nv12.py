"""NV12 -> the S x S frame PyAV gives (`videoitg.decode.nv12`, what NVDEC's frames go through on a GPU), run here on
the CPU: FFmpeg's RGB24 and Pillow's bicubic resize reproduced in integers, bit for bit, on decoded frames of several
sizes, both ranges and two matrices, and on random images."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.clips import natural_frame, photo_frame, write_rgb_clip
from videoitg.decode.colour import YuvSignal, signal_of
from videoitg.decode.errors import UnsupportedCodecError
from videoitg.decode.nv12 import check_signal, ffmpeg_rgb, nv12_planes, nv12_to_frames, resize_like_pil
from videoitg.preprocess import resize_frame


def nv12_of(frame: av.VideoFrame) -> torch.Tensor:
    """A yuv420p frame's samples laid out as NVDEC hands them over: Y, then U and V interleaved."""
    w, h = frame.width, frame.height
    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width] for p in frame.planes]
    uv = np.stack([planes[1], planes[2]], axis=-1).reshape(-1)
    assert planes[0].shape == (h, w)
    return torch.from_numpy(np.concatenate([planes[0].reshape(-1), uv]))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("nv12")
    return {
        "camera_601": write_rgb_clip(d / "c601.mp4", [natural_frame(i, 320, 180) for i in range(3)], codec="libx264"),
        "photo_709": write_rgb_clip(d / "p709.mp4", [photo_frame(i, 640, 360) for i in range(3)], codec="libx264",
                                    colorspace=1),
        "photo_full": write_rgb_clip(d / "pfull.webm", [photo_frame(i, 426, 240) for i in range(3)],
                                     color_range=2),
        "odd_width": write_rgb_clip(d / "odd.webm", [natural_frame(i, 215, 120) for i in range(3)]),
        "small": write_rgb_clip(d / "small.webm", [natural_frame(i, 96, 64) for i in range(3)]),
    }


@pytest.mark.parametrize("name", ["camera_601", "photo_709", "photo_full", "odd_width", "small"])
@pytest.mark.parametrize("size", [384, 32])
def test_nv12_frames_are_pyavs_frames_bit_for_bit(clips: dict[str, Path], name: str, size: int) -> None:
    with av.open(str(clips[name])) as c:
        frames = list(c.decode(video=0))
    signal = signal_of(frames[0])
    check_signal(signal, name)
    want = np.stack([resize_frame(f.to_ndarray(format="rgb24"), size).transpose(2, 0, 1) for f in frames])
    got = nv12_to_frames([nv12_of(f) for f in frames], frames[0].width, frames[0].height, size, signal)
    assert got.dtype == torch.uint8 and got.shape == want.shape
    assert np.array_equal(got.numpy(), want), np.abs(got.numpy().astype(int) - want).max()


def test_the_colour_conversion_is_pyavs_rgb24(clips: dict[str, Path]) -> None:
    for name in ("photo_709", "photo_full", "odd_width"):
        with av.open(str(clips[name])) as c:
            frame = next(c.decode(video=0))
        y, u, v = nv12_planes(nv12_of(frame), frame.width, frame.height)
        rgb = ffmpeg_rgb(y[None], u[None], v[None], signal_of(frame))[0].permute(1, 2, 0).numpy()
        assert np.array_equal(rgb, frame.to_ndarray(format="rgb24")), name


@pytest.mark.parametrize("shape", [(640, 360), (1280, 720), (97, 33), (384, 384), (200, 500), (720, 1280),
                                   (480, 640), (640, 854)])
def test_the_resize_is_pillows_bicubic(shape: tuple[int, int]) -> None:
    """Random images (no structure to hide an off-by-one tap), down and up, square and not, portrait frames among
    them (which Pillow 13 resizes vertical pass first)."""
    w, h = shape
    rng = np.random.default_rng(w * h)
    img = rng.integers(0, 256, (2, h, w, 3), dtype=np.uint8)
    for size in (384, 48):
        want = np.stack([np.asarray(Image.fromarray(i).resize((size, size), Image.BICUBIC)) for i in img])
        got = resize_like_pil(torch.from_numpy(img).permute(0, 3, 1, 2).contiguous(), size)
        assert np.array_equal(got.permute(0, 2, 3, 1).numpy(), want), (shape, size)


def test_formats_the_conversion_does_not_cover_are_refused() -> None:
    for signal in (YuvSignal(pix_fmt="yuv444p", width=64, height=64), YuvSignal(width=64, height=63),
                   YuvSignal(pix_fmt="yuv420p10le", width=64, height=64)):
        with pytest.raises(UnsupportedCodecError, match="use decoder='pyav'"):
            check_signal(signal, "clip")
    check_signal(YuvSignal(width=65, height=64), "clip")  # odd widths convert like even ones


def test_a_frame_of_the_wrong_size_is_an_error() -> None:
    with pytest.raises(ValueError, match="not 64x48"):
        nv12_planes(torch.zeros(64 * 48), 64, 48)
