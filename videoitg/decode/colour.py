"""YUV -> RGB: what FFmpeg does (the reference: PyAV's `to_ndarray(format="rgb24")` and decord, which the released
pipeline decodes with, give identical pixels), what DALI does instead, and the affine map from DALI's RGB onto
FFmpeg's that the DALI pipeline applies (docs/decoding.md, "Pixels").

FFmpeg (libswscale, flags SWS_BILINEAR, no size change): the matrix is the frame's tagged colour space
(`sws_getCoefficients`: BT.601 when untagged), the range is the frame's tagged range (full for the yuvj formats),
and 4:2:0 chroma is replicated over each 2x2 block (no interpolation), in 16-bit fixed point.
DALI's CPU decoder converts with libswscale too, but with SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND
and without the colour space tag: BT.601 always, the tagged range, chroma interpolated (measured: equal to PyAV
converting with those flags and BT.601, bit for bit). DALI's GPU decoder converts NV12 in its own kernel: BT.601,
the range from the bitstream's full-range flag, chroma interpolated (read in DALI's source; not run here). The
matrix difference is affine in RGB, so it is undone here exactly up to rounding and clipping; the chroma
interpolation is not (DALI's video decoders output RGB only) and is the remaining difference.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class YuvSignal:
    """How a video's YUV samples are to be read: `matrix` is FFmpeg's AVColorSpace number (2 = untagged),
    `full_range` the JPEG (0-255) range rather than the MPEG (16-235/240) one."""

    matrix: int = 2
    full_range: bool = False
    pix_fmt: str = "yuv420p"

    @property
    def name(self) -> str:
        return f"{MATRIX_NAMES.get(self.matrix, 'bt601')}/{'full' if self.full_range else 'limited'}"


def signal_of(frame) -> YuvSignal:  # frame: av.VideoFrame
    """What FFmpeg reads from a decoded frame's tags when converting it to RGB."""
    fmt = frame.format.name
    full = fmt.startswith("yuvj") or int(frame.color_range) == 2  # AVCOL_RANGE_JPEG
    return YuvSignal(matrix=int(frame.colorspace), full_range=full, pix_fmt=fmt)


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


def dali_correction(signal: YuvSignal | None) -> np.ndarray:
    """[3, 3] float32 M with FFmpeg's RGB = M @ DALI's RGB for a video FFmpeg reads as `signal` (identity when it is
    BT.601, which DALI assumes on CPU and GPU alike, or unknown). Both use the tagged range, so the YUV offsets are
    the same and cancel: rgb_d = A_d (yuv - o), rgb_f = A_f (yuv - o)  =>  rgb_f = A_f A_d^-1 rgb_d."""
    if signal is None:
        return np.eye(3, dtype=np.float32)
    a_d, _ = yuv_to_rgb(2, signal.full_range)
    a_f, _ = yuv_to_rgb(signal.matrix, signal.full_range)
    return (a_f @ np.linalg.inv(a_d)).astype(np.float32)
