"""YUV -> RGB as FFmpeg does it (the reference: PyAV's rgb24, and decord's, which the released pipeline decodes
with), what DALI does instead, and the parameters with which the DALI pipeline undoes DALI's conversion and redoes
FFmpeg's (docs/decoding-colour.md derives them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import av

import re
from dataclasses import dataclass
from functools import cache

import numpy as np

# libswscale's ff_yuv2rgb_coeffs, by AVColorSpace: (crv, cbu, cgu, cgv) in 16.16 fixed point, scaled for
# limited-range input (x 255/224). Unlisted and unsupported values fall back to BT.601 as sws_getCoefficients does.
BT601 = (104597, 132201, 25675, 53279)
FFMPEG_COEFFS: dict[int, tuple[int, int, int, int]] = {
    1: (117489, 138438, 13975, 34925),  # BT.709
    4: (104448, 132798, 24759, 53109),  # FCC
    7: (117579, 136230, 16907, 35559),  # SMPTE 240M
    9: (110013, 140363, 12277, 42626),  # BT.2020 non-constant luminance
    10: (110013, 140363, 12277, 42626),  # BT.2020 constant luminance (swscale converts it like NCL)
}
MATRIX_NAMES = {1: "bt709", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
CHROMA_INVERSE_RADIUS = 7  # taps either side; the next tap would be 0.17^8 ~ 1e-6 of the centre one


@dataclass(frozen=True)
class YuvSignal:
    """How a video's YUV samples are to be read: `matrix` is FFmpeg's AVColorSpace number (2 = untagged),
    `full_range` the JPEG (0-255) range rather than the MPEG (16-235/240) one, `pix_fmt` FFmpeg's pixel format
    (the chroma subsampling), `width` x `height` the decoded frame size (0: unknown)."""

    matrix: int = 2
    full_range: bool = False
    pix_fmt: str = "yuv420p"
    width: int = 0
    height: int = 0

    @property
    def name(self) -> str:
        return f"{MATRIX_NAMES.get(self.matrix, 'bt601')}/{'full' if self.full_range else 'limited'}"


def signal_of(frame: av.VideoFrame) -> YuvSignal:
    """What FFmpeg reads from a decoded frame's tags when converting it to RGB."""
    fmt = frame.format.name
    full = fmt.startswith("yuvj") or int(frame.color_range) == 2  # AVCOL_RANGE_JPEG
    return YuvSignal(matrix=int(frame.colorspace), full_range=full, pix_fmt=fmt, width=frame.width,
                     height=frame.height)


def chroma_subsampling(pix_fmt: str) -> tuple[int, int]:
    """(horizontal, vertical) chroma subsampling factors of an 8-bit planar YUV format: (2, 2) for yuv420p and
    yuvj420p, (2, 1) for 4:2:2, (1, 1) for 4:4:4 and for formats this module does not handle."""
    m = re.fullmatch(r"yuvj?(4[24][024])p", pix_fmt)
    return {"420": (2, 2), "422": (2, 1), "440": (1, 2)}.get(m.group(1), (1, 1)) if m else (1, 1)


def yuv_to_rgb(matrix: int, full_range: bool) -> tuple[np.ndarray, np.ndarray]:
    """FFmpeg's conversion as real arithmetic: RGB = A @ (YUV - offset), in 0..255 units. A is [3, 3] (rows R, G, B;
    columns Y, U, V), offset [3]."""
    crv, cbu, cgu, cgv = (c / 65536.0 for c in FFMPEG_COEFFS.get(matrix, BT601))
    if full_range:
        cy, y0 = 1.0, 0.0
        crv, cbu, cgu, cgv = (c * 224.0 / 255.0 for c in (crv, cbu, cgu, cgv))
    else:
        cy, y0 = 255.0 / 219.0, 16.0
    a = np.array([[cy, 0.0, crv], [cy, -cgu, -cgv], [cy, cbu, 0.0]])
    return a, np.array([y0, 128.0, 128.0])


@dataclass(frozen=True)
class FixedPoint:
    """libswscale's x86 unscaled YUV -> RGB24 converter for one matrix and range: with samples shifted up 3 bits and
    16-bit coefficients, R = yt + v*vr, G = yt + u*ug + v*vg, B = yt + u*ub where each product keeps its high 16
    bits, yt = (y - y0) * yc likewise, u = U - 128, v = V - 128. Since (8a * c) >> 16 = floor(a * c / 8192) and every
    |a * c| < 2^24, float32 arithmetic reproduces it exactly."""

    y0: int
    yc: int
    vr: int
    ub: int
    ug: int
    vg: int


def ffmpeg_fixed_point(signal: YuvSignal) -> FixedPoint:
    crv, cbu, cgu, cgv = FFMPEG_COEFFS.get(signal.matrix, BT601)
    cgu, cgv = -cgu, -cgv
    cy, y0 = 1 << 16, 0
    if signal.full_range:
        crv, cbu = crv * 224 // 255, cbu * 224 // 255
        cgu, cgv = int(cgu * 224 / 255), int(cgv * 224 / 255)  # C division truncates toward zero
    else:
        cy, y0 = cy * 255 // 219, 16

    def coeff(c: int) -> int:  # roundToInt16(c << 13) >> 16 ... as the x86 table stores it
        return int(np.clip(((c << 13) + (1 << 15)) >> 16, -0x8000, 0x7FFF))

    return FixedPoint(y0=y0, yc=coeff(cy), vr=coeff(crv), ub=coeff(cbu), ug=coeff(cgu), vg=coeff(cgv))


def ffmpeg_rgb24(y: np.ndarray, u: np.ndarray, v: np.ndarray, signal: YuvSignal) -> np.ndarray:
    """FFmpeg's RGB24 from full-resolution Y, U, V sample planes ([..., H, W] integers, chroma already at full
    resolution as FFmpeg uses it: replicated over its blocks for the fixed-point converter), with
    `ffmpeg_fixed_point`'s coefficients: each product floored (`ffmpeg_uses_fixed_point`: what the DALI pipeline
    computes on the device from the recovered samples) or, for 4:4:4, their sum rounded."""
    fp = ffmpeg_fixed_point(signal)
    y, u, v = (np.asarray(a, np.int64) for a in (y, u, v))
    du, dv = u - 128, v - 128
    products = [(y - fp.y0) * fp.yc, dv * fp.vr, du * fp.ug, dv * fp.vg, du * fp.ub]
    if ffmpeg_uses_fixed_point(signal):
        t = [np.floor_divide(p, 8192) for p in products]
        rgb = [t[0] + t[1], t[0] + t[2] + t[3], t[0] + t[4]]
    else:
        t = products
        rgb = [np.floor_divide(c + 4096, 8192) for c in (t[0] + t[1], t[0] + t[2] + t[3], t[0] + t[4])]
    return np.clip(np.stack(rgb, -1), 0, 255).astype(np.uint8)


@cache
def chroma_inverse_taps(radius: int = CHROMA_INVERSE_RADIUS) -> np.ndarray:
    """The filter that undoes DALI's chroma interpolation on the block means: T^-1 for T = tridiag(1/8, 3/4, 1/8),
    truncated to 2 * radius + 1 taps and normalised to a DC gain of 1 (float32)."""
    n = 8 * radius + 1
    t = np.eye(n) * 0.75 + (np.eye(n, k=1) + np.eye(n, k=-1)) * 0.125
    centre = np.linalg.solve(t, np.eye(n)[n // 2])[n // 2 - radius: n // 2 + radius + 1]
    return (centre / centre.sum()).astype(np.float32)


# DALI's RGB -> its BT.601 luma and centred chroma at full-range scale (rows Y, U, V); the tagged range only scales
# these (`dali_colour_params` row 0), so one constant serves every video.
DALI_RGB_TO_YUV = np.linalg.inv(yuv_to_rgb(2, True)[0]).astype(np.float32)


def ffmpeg_uses_fixed_point(signal: YuvSignal) -> bool:
    """Whether FFmpeg converts this format with its unscaled fixed-point converter (`FixedPoint`): 4:2:0 and 4:2:2 of
    even height (measured: every such size tried, odd widths included). Other frames (4:4:4, odd heights) go through
    swscale's generic path: for 4:4:4 it computes the same coefficients' products exactly and rounds the sum; for
    subsampled chroma it interpolates as DALI's decoder does (measured: DALI's RGB equals it for BT.601)."""
    sub_h, sub_v = chroma_subsampling(signal.pix_fmt)
    return sub_h == 2 and signal.height % 2 == 0


def dali_colour_params(signal: YuvSignal | None) -> np.ndarray:
    """The DALI pipeline's "COLOUR" input, float32 [3, 3], for a video FFmpeg reads as `signal` (None: an untagged
    limited-range 4:2:0 video, as FFmpeg reads one):
    row 0: full range (1) or limited (0); undo DALI's chroma interpolation horizontally (1) or not (0); vertically;
    row 1: FFmpeg's coefficients yc, vr, ub; row 2: ug, vg (`FixedPoint`), and 1 where FFmpeg uses its fixed-point
    converter (`ffmpeg_uses_fixed_point`), 0 where it takes the generic path (then the pipeline keeps DALI's RGB,
    mapped onto the tagged matrix).
    The interpolation is undone along each subsampled axis of even extent (an odd extent has a half block, whose
    mean is not `T c`; there the interpolation stays as DALI made it)."""
    s = signal or YuvSignal()
    sub_h, sub_v = chroma_subsampling(s.pix_fmt)
    fp = ffmpeg_fixed_point(s)
    return np.array([[float(s.full_range), float(sub_h == 2 and s.width % 2 == 0),
                      float(sub_v == 2 and s.height % 2 == 0)],
                     [fp.yc, fp.vr, fp.ub],
                     [fp.ug, fp.vg, float(ffmpeg_uses_fixed_point(s))]], dtype=np.float32)
