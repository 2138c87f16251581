"""What FFmpeg's YUV -> RGB is, exactly (the reference pixels: PyAV's rgb24 = decord's, the released decoder), and
the matrix that maps DALI's conversion onto it (videoitg/decode/colour.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import av
import numpy as np
import pytest
from fixtures_video import colour_edges_frame, natural_frame, write_rgb_clip

from videoitg.decode.colour import BT601, FFMPEG_COEFFS, YuvSignal, dali_correction, signal_of, yuv_to_rgb

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
    shifted up 3 bits, 16-bit coefficients (`roundToInt16(c << 13)`), products kept as their high 16 bits,
    saturating adds; chroma replicated over each 2x2 block; matrix and range from the frame's tags."""
    sig = signal_of(frame)
    w, h = frame.width, frame.height
    planes = [np.frombuffer(bytes(p), np.uint8).reshape(-1, p.line_size) for p in frame.planes]
    y = planes[0][:h, :w].astype(np.int32)
    u, v = (p[: h // 2, : w // 2].astype(np.int32).repeat(2, 0).repeat(2, 1) for p in planes[1:3])
    crv, cbu, cgu, cgv = FFMPEG_COEFFS.get(sig.matrix, BT601)
    cgu, cgv = -cgu, -cgv
    cy, oy = 1 << 16, 0
    if sig.full_range:
        crv, cbu = crv * 224 // 255, cbu * 224 // 255
        cgu, cgv = int(cgu * 224 / 255), int(cgv * 224 / 255)  # C division truncates toward zero
    else:
        cy, oy = cy * 255 // 219, 16 << 16

    def coeff(c: int) -> int:
        return int(np.clip((c + (1 << 15)) >> 16, -0x8000, 0x7FFF))

    def sat(a: np.ndarray) -> np.ndarray:
        return np.clip(a, -0x8000, 0x7FFF)

    yc, yo = coeff(cy << 13), coeff(oy << 3)
    vr, ub, ug, vg = (coeff(c << 13) for c in (crv, cbu, cgu, cgv))
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


@pytest.mark.parametrize("matrix", [1, 4, 7, 9])
@pytest.mark.parametrize("full", [False, True])
def test_dali_correction_maps_bt601_rgb_onto_the_tagged_matrix(matrix: int, full: bool) -> None:
    yuv = np.random.default_rng(matrix).uniform([16, 16, 16], [235, 240, 240], (1000, 3))
    a601, off = yuv_to_rgb(2, full)
    want_a, want_off = yuv_to_rgb(matrix, full)
    m = dali_correction(YuvSignal(matrix, full))
    got = (a601 @ (yuv - off).T).T @ m.T.astype(np.float64)
    assert np.abs(got - (want_a @ (yuv - want_off).T).T).max() < 1e-3
    assert np.abs(m - np.eye(3)).max() > 1e-3  # a real correction, not the identity (FCC is close to BT.601)


@pytest.mark.parametrize("signal", [None, YuvSignal(2, False), YuvSignal(5, True), YuvSignal(6, False),
                                    YuvSignal(8, False)])
def test_dali_correction_is_the_identity_for_bt601_and_unknown(signal: YuvSignal | None) -> None:
    assert np.abs(dali_correction(signal) - np.eye(3)).max() < 1e-6


def test_yuv_to_rgb_is_the_textbook_matrix() -> None:
    """FFmpeg's fixed-point table is BT.601 / BT.709 to 1e-4 (Kr, Kb = 0.299, 0.114 / 0.2126, 0.0722)."""
    for matrix, (kr, kb) in {2: (0.299, 0.114), 1: (0.2126, 0.0722)}.items():
        a, off = yuv_to_rgb(matrix, full_range=True)
        kg = 1 - kr - kb
        want = np.array([[1, 0, 2 * (1 - kr)], [1, -2 * kb * (1 - kb) / kg, -2 * kr * (1 - kr) / kg],
                         [1, 2 * (1 - kb), 0]])
        assert np.abs(a - want).max() < 1e-4 and off.tolist() == [0, 128, 128]
