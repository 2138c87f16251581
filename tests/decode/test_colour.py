"""What FFmpeg's YUV -> RGB is, exactly (the reference pixels: PyAV's rgb24 = decord's, the released decoder), what
DALI's conversion does instead, and the parameters with which the DALI pipeline undoes DALI's and redoes FFmpeg's
(videoitg/decode/colour.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import Colorspace, Interpolation

from benchmarks.clips import colour_edges_frame, natural_frame, write_rgb_clip
from videoitg.decode.colour import (
    YuvSignal,
    chroma_inverse_taps,
    chroma_subsampling,
    dali_colour_params,
    ffmpeg_fixed_point,
    ffmpeg_rgb24,
    ffmpeg_uses_fixed_point,
    signal_of,
    yuv_to_rgb,
)

# (content, codec, AVColorSpace tag, AVColorRange tag)
CLIPS = {
    "untagged": ("natural", "libvpx-vp9", None, None),
    "edges": ("edges", "libvpx-vp9", None, None),
    "bt709": ("natural", "libvpx-vp9", 1, None),
    "bt2020": ("natural", "libvpx-vp9", 9, None),
    "fcc": ("natural", "libx264", 4, None),
    "smpte240m": ("natural", "libx264", 7, None),
    "fullrange": ("natural", "libvpx-vp9", None, 2),
    "mjpeg": ("natural", "mjpeg", None, None),  # yuvj420p: full range by pixel format
    "width_not_16": ("natural", "libvpx-vp9", None, None),
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("colour")
    out = {}
    for name, (content, codec, cs, rng) in CLIPS.items():
        w, h = (100, 66) if name == "width_not_16" else (96, 64)
        draw = colour_edges_frame if content == "edges" else natural_frame
        ext = {"libvpx-vp9": "webm", "libx264": "mp4", "mjpeg": "mkv"}[codec]
        opts = {"lossless": "1"} if content == "edges" else None
        out[name] = write_rgb_clip(d / f"{name}.{ext}", [draw(i, w, h) for i in range(3)], codec=codec,
                                   options=opts, colorspace=cs, color_range=rng)
    return out


def decoded(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        return list(c.decode(video=0))


def swscale_420_to_rgb24(frame: av.VideoFrame) -> np.ndarray:
    """libswscale's unscaled YUV 4:2:0 -> RGB24 converter on x86 (yuv_2_rgb.asm), integer for integer: samples
    shifted up 3 bits, 16-bit coefficients (`roundToInt16(c << 13)`, `colour.ffmpeg_fixed_point`), products kept as
    their high 16 bits, saturating int16 adds; chroma replicated over each 2x2 block; matrix and range from the
    frame's tags."""
    sig = signal_of(frame)
    w, h = frame.width, frame.height
    planes = [np.frombuffer(bytes(p), np.uint8).reshape(-1, p.line_size) for p in frame.planes]
    y = planes[0][:h, :w].astype(np.int32)
    u, v = (p[: h // 2, : w // 2].astype(np.int32).repeat(2, 0).repeat(2, 1) for p in planes[1:3])
    fp = ffmpeg_fixed_point(sig)  # the library's coefficients: the comparison with PyAV below checks them too

    def sat(a: np.ndarray) -> np.ndarray:
        return np.clip(a, -0x8000, 0x7FFF)

    yc, yo, vr, ub, ug, vg = fp.yc, fp.y0 << 3, fp.vr, fp.ub, fp.ug, fp.vg
    yt = ((((y << 3) - yo).astype(np.int16).astype(np.int32)) * yc) >> 16
    u8, v8 = sat((u << 3) - 1024), sat((v << 3) - 1024)
    r = sat(yt + ((v8 * vr) >> 16))
    g = sat(yt + sat(((u8 * ug) >> 16) + ((v8 * vg) >> 16)))
    b = sat(yt + ((u8 * ub) >> 16))
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="the oracle follows libswscale's x86 kernels; other CPUs round differently")
@pytest.mark.parametrize("name", list(CLIPS))
def test_ffmpeg_rgb24_is_the_tagged_matrix_and_range_with_replicated_chroma(clips: dict[str, Path],
                                                                              name: str) -> None:
    for frame in decoded(clips[name]):
        assert np.array_equal(swscale_420_to_rgb24(frame), frame.to_ndarray(format="rgb24")), name


def test_signal_follows_the_tags(clips: dict[str, Path]) -> None:
    got = {k: signal_of(decoded(clips[k])[0]) for k in ("untagged", "bt709", "fullrange", "mjpeg")}
    assert (got["untagged"].matrix, got["untagged"].full_range) == (2, False)
    assert (got["bt709"].matrix, got["bt709"].name) == (1, "bt709/limited")
    assert got["fullrange"].full_range and got["fullrange"].pix_fmt == "yuv420p"
    assert got["mjpeg"].full_range and got["mjpeg"].pix_fmt == "yuvj420p"


def test_decord_decodes_the_same_pixels_as_pyav(clips: dict[str, Path]) -> None:
    """The released pipeline decodes with decord: its RGB equals PyAV's, so PyAV's pixels are the reference."""
    decord = pytest.importorskip("decord")
    for name in ("untagged", "edges", "bt709", "fullrange", "width_not_16"):
        ref = np.stack([f.to_ndarray(format="rgb24") for f in decoded(clips[name])])
        vr = decord.VideoReader(str(clips[name]))
        assert np.array_equal(vr.get_batch(list(range(len(vr)))).asnumpy(), ref), name


X86 = platform.machine().lower() in ("x86_64", "amd64")


def planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(bytes(p), np.uint8).reshape(-1, p.line_size)[: p.height, : p.width].astype(np.int64)
            for p in frame.planes]


def random_frame(fmt: str, width: int, height: int, seed: int, lo: int = 0, hi: int = 255) -> av.VideoFrame:
    rng = np.random.default_rng(seed)
    f = av.VideoFrame(width, height, fmt)
    for p in f.planes:
        p.update(rng.integers(lo, hi + 1, (p.height, p.line_size)).astype(np.uint8).tobytes())
    return f


@pytest.mark.skipif(not X86, reason="FFmpeg's fixed-point kernels are x86's; other CPUs round differently")
@pytest.mark.parametrize(("fmt", "size"), [
    (fmt, size)
    for fmt in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p")
    for size in ((96, 64), (98, 66), (97, 64), (96, 63), (640, 360))
    # odd-height 4:2:x goes through FFmpeg's generic path, which resamples the chroma itself: not this rule
    if fmt.endswith("444p") or size[1] % 2 == 0])
def test_ffmpeg_rgb24_is_pyavs_conversion(fmt: str, size: tuple[int, int]) -> None:
    """`ffmpeg_rgb24` (what the DALI pipeline computes) is FFmpeg's rgb24, bit for bit, on random samples: each
    product floored where FFmpeg uses its fixed-point converter (4:2:0 and 4:2:2 of even height, chroma replicated),
    their sum rounded where it takes the generic path (4:4:4). The generic path is checked on nominal limited-range
    samples (16..235/240): it wraps around where a channel reaches 512 (Y 244, U 248 in BT.709 gives blue 0), which
    is not reproduced."""
    w, h = size
    sub_h, sub_v = chroma_subsampling(fmt)
    fixed = ffmpeg_uses_fixed_point(YuvSignal(pix_fmt=fmt, width=w, height=h))
    for matrix in (2, 1, 9):
        frame = random_frame(fmt, w, h, seed=matrix, lo=0 if fixed or fmt.startswith("yuvj") else 16,
                             hi=255 if fixed or fmt.startswith("yuvj") else 235)
        frame.colorspace = matrix
        y, u, v = planes(frame)
        u, v = (c.repeat(sub_v, 0).repeat(sub_h, 1)[:h, :w] for c in (u, v))
        sig = signal_of(frame)
        assert sig.full_range == fmt.startswith("yuvj") and sig.matrix == matrix
        assert np.array_equal(ffmpeg_rgb24(y, u, v, sig), frame.to_ndarray(format="rgb24")), (fmt, size, matrix)


def test_fixed_point_coefficients_are_the_tables() -> None:
    bt709 = ffmpeg_fixed_point(YuvSignal(matrix=1))
    assert (bt709.y0, bt709.yc) == (16, 9539) and bt709.vr == ((117489 << 13) + (1 << 15)) >> 16
    full = ffmpeg_fixed_point(YuvSignal(full_range=True))
    assert (full.y0, full.yc) == (0, 8192) and full.ug < 0 and full.vg < 0
    assert ffmpeg_uses_fixed_point(YuvSignal(pix_fmt="yuvj422p", height=64))
    assert not ffmpeg_uses_fixed_point(YuvSignal(pix_fmt="yuv420p", height=63))
    assert not ffmpeg_uses_fixed_point(YuvSignal(pix_fmt="yuv444p", height=64))


def dali_like(frame: av.VideoFrame) -> np.ndarray:
    """DALI's CPU conversion (tests/decode/test_dali.py checks it is DALI's bit for bit)."""
    flags = Interpolation.BILINEAR | Interpolation.FULL_CHR_H_INT | Interpolation.ACCURATE_RND
    return frame.to_ndarray(format="rgb24", src_colorspace=Colorspace.ITU601, interpolation=flags)


def test_dali_interpolates_chroma_bilinearly_at_the_block_centres() -> None:
    """The model the inverse relies on: a chroma impulse comes out of DALI's conversion weighted 9/16, 3/16, 1/16
    over the 4x4 pixels around its 2x2 block (3/4 and 1/4 on each axis), and FFmpeg's rgb24 keeps it in its block."""
    w, h = 32, 16
    base = av.VideoFrame.from_ndarray(np.concatenate([np.full((h, w), 128, np.uint8),
                                                      np.full((h // 2, w), 128, np.uint8)]), format="yuv420p")
    chroma = np.full((h // 4, w), 128, np.uint8)
    chroma[2, 8] = 168  # U plane row 4 (two chroma rows per line of w), column 8
    hit = av.VideoFrame.from_ndarray(np.concatenate([np.full((h, w), 128, np.uint8), chroma,
                                                     np.full((h // 4, w), 128, np.uint8)]), format="yuv420p")
    blue = dali_like(hit)[..., 2].astype(float) - dali_like(base)[..., 2]
    step = blue[8, 16] / (9 / 16)  # the full response of 40 chroma levels
    want = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 16 * step
    assert np.abs(blue[7:11, 15:19] - want).max() <= 1.0
    assert np.abs(blue).sum() == pytest.approx(want.sum(), abs=20)  # nothing outside the 4x4
    ffmpeg = hit.to_ndarray(format="rgb24")[..., 2].astype(float) - base.to_ndarray(format="rgb24")[..., 2]
    assert np.count_nonzero(ffmpeg) == 4 and np.all(ffmpeg[8:10, 16:18] > 0)


def test_chroma_inverse_undoes_the_block_means_of_the_interpolation() -> None:
    """Block means of DALI's interpolation (3/4, 1/4, edges clamped) are T c with T = tridiag(1/8, 3/4, 1/8) under a
    symmetric extension; the inverse taps give c back."""
    c = np.random.default_rng(0).uniform(-100, 100, 64)
    ext = np.concatenate([c[:1], c, c[-1:]])
    up = np.empty(128)
    up[0::2] = 0.75 * ext[1:-1] + 0.25 * ext[:-2]
    up[1::2] = 0.75 * ext[1:-1] + 0.25 * ext[2:]
    means = up.reshape(64, 2).mean(1)
    taps = chroma_inverse_taps().astype(np.float64)
    r = len(taps) // 2
    padded = np.pad(means, r, mode="symmetric")
    back = np.array([padded[i: i + len(taps)] @ taps for i in range(64)])
    assert np.abs(back - c).max() < 1e-3
    assert taps.sum() == pytest.approx(1.0) and abs(taps[0]) < 1e-4 * taps[r]


@pytest.mark.parametrize("signal,flags", [
    (YuvSignal(width=640, height=360), (0, 1, 1, 1)),
    (YuvSignal(matrix=1, full_range=True, pix_fmt="yuvj422p", width=640, height=360), (1, 1, 0, 1)),
    (YuvSignal(pix_fmt="yuv444p", width=640, height=360), (0, 0, 0, 0)),
    (YuvSignal(width=641, height=360), (0, 0, 1, 1)),
    (YuvSignal(width=640, height=359), (0, 1, 0, 0)),
    (None, (0, 1, 1, 1)),
])
def test_dali_colour_params(signal: YuvSignal | None, flags: tuple[int, int, int, int]) -> None:
    m = dali_colour_params(signal)
    assert m.shape == (3, 3) and m.dtype == np.float32
    assert (m[0, 0], m[0, 1], m[0, 2], m[2, 2]) == flags
    fp = ffmpeg_fixed_point(signal or YuvSignal())
    assert m[1].tolist() == [fp.yc, fp.vr, fp.ub] and m[2, :2].tolist() == [fp.ug, fp.vg]


def test_yuv_to_rgb_is_the_textbook_matrix() -> None:
    """FFmpeg's fixed-point table is BT.601 / BT.709 to 1e-4 (Kr, Kb = 0.299, 0.114 / 0.2126, 0.0722)."""
    for matrix, (kr, kb) in {2: (0.299, 0.114), 1: (0.2126, 0.0722)}.items():
        a, off = yuv_to_rgb(matrix, full_range=True)
        kg = 1 - kr - kb
        want = np.array([[1, 0, 2 * (1 - kr)], [1, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                         [1, 2 * (1 - kb), 0]])
        assert np.abs(a - want).max() < 1e-4 and off.tolist() == [0, 128, 128]
