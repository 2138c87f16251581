"""An NVDEC frame (NV12: the Y plane, then the U and V samples interleaved at half resolution) to the S x S RGB frame
PyAV's decoder gives, on the frame's device, in integers: FFmpeg's fixed-point YUV -> RGB24 (`colour.FixedPoint`,
chroma replicated over its 2 x 2 block), then Pillow's bicubic resize as Pillow computes it (its fixed-point
coefficients, a horizontal pass rounded to uint8, then a vertical one). The result is PyAV's `resize_frame` output bit
for bit wherever the decoded samples are FFmpeg's (an H.264 decoder's are: the standard fixes them), and no frame is
ever held at full size as floats: the only full-size tensors are the uint8 RGB frame and the conversion's int32
terms of a few frames at a time.

Torch only (CPU or CUDA): the tests check it on the CPU against PyAV + Pillow; NVDEC feeds it on a GPU
(`videoitg.decode.nvc`)."""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from videoitg.decode.colour import YuvSignal, chroma_subsampling, ffmpeg_fixed_point, ffmpeg_uses_fixed_point
from videoitg.decode.errors import UnsupportedCodecError

if TYPE_CHECKING:
    import torch

PRECISION_BITS = 32 - 8 - 2  # Pillow's 8-bit resampling: coefficients in 22-bit fixed point, int32 sums


def check_signal(signal: YuvSignal, name: str) -> None:
    """UnsupportedCodecError unless the frames are 8-bit 4:2:0 of even height (FFmpeg's fixed-point converter, the
    one this module reproduces; other formats convert through swscale's generic path)."""
    if chroma_subsampling(signal.pix_fmt) != (2, 2) or not ffmpeg_uses_fixed_point(signal) or \
            signal.pix_fmt not in ("yuv420p", "yuvj420p"):
        raise UnsupportedCodecError(f"{name}: NVDEC frames of {signal.pix_fmt} {signal.width}x{signal.height} are "
                                    "not converted here (8-bit 4:2:0 of even height only); use decoder='pyav'")


def nv12_planes(nv12: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One NV12 frame (any shape holding width x height x 3/2 bytes in the NV12 order) -> Y [H, W], U and V
    [H/2, ceil(W/2)] uint8 views (or copies, where the frame is not contiguous)."""
    cw = (width + 1) // 2
    flat = nv12.reshape(-1)
    if flat.numel() != width * height + 2 * cw * (height // 2):
        raise ValueError(f"an NV12 frame of {flat.numel()} bytes is not {width}x{height}")
    y = flat[:width * height].view(height, width)
    uv = flat[width * height:].view(height // 2, cw, 2)
    return y, uv[..., 0], uv[..., 1]


def ffmpeg_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, signal: YuvSignal) -> torch.Tensor:
    """FFmpeg's RGB24 ([B, 3, H, W] uint8) of 4:2:0 frames: Y [B, H, W], U and V [B, H/2, ceil(W/2)] uint8 on any
    device; each of the five products floored (`colour.ffmpeg_rgb24`, the fixed-point path), chroma replicated."""
    import torch

    fp = ffmpeg_fixed_point(signal)
    h, w = y.shape[-2:]

    def floor8192(a: torch.Tensor, c: int) -> torch.Tensor:
        return torch.div(a * c, 8192, rounding_mode="floor")

    def full(c: torch.Tensor) -> torch.Tensor:  # chroma replicated over its 2 x 2 block
        return c.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., :h, :w]

    du, dv = u.to(torch.int32) - 128, v.to(torch.int32) - 128
    luma = floor8192(y.to(torch.int32) - fp.y0, fp.yc)
    r = luma + full(floor8192(dv, fp.vr))
    g = luma + full(floor8192(du, fp.ug) + floor8192(dv, fp.vg))
    b = luma + full(floor8192(du, fp.ub))
    return torch.stack([r, g, b], dim=-3).clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=64)
def pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's bicubic resampling of one axis (src/libImaging/Resample.c, `precompute_coeffs` and
    `normalize_coeffs_8bpc`, the same double arithmetic): each output's first input (int64 [out]) and its
    coefficients in 22-bit fixed point (int64 [out, taps], zero past the output's own taps)."""
    support_base = 2.0  # bicubic
    scale = filterscale = in_size / out_size
    filterscale = max(filterscale, 1.0)
    support = support_base * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    xmins = np.zeros(out_size, np.int64)
    kk = np.zeros((out_size, ksize), np.int64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        ss = 1.0 / filterscale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        k = [_bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        ww = sum(k)  # in order, as the C loop adds them
        k = [w / ww if ww != 0.0 else w for w in k]
        xmins[xx] = xmin
        for x, w in enumerate(k):
            kk[xx, x] = int(-0.5 + w * (1 << PRECISION_BITS)) if w < 0 else int(0.5 + w * (1 << PRECISION_BITS))
    return xmins, kk


def _bicubic(x: float) -> float:
    a = -0.5
    x = -x if x < 0.0 else x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def _resample(x: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One Pillow pass along `dim` of uint8 `x`: int32 sums of uint8 samples times the fixed-point coefficients,
    from half a unit, shifted down and clipped to 0..255, one tap at a time (no float, no full-size temporary past
    the output's own size)."""
    import torch

    in_size = x.shape[dim]
    if in_size == out_size:
        return x
    shape = [1] * x.dim()
    shape[dim] = out_size
    acc = torch.full([*x.shape[:dim % x.dim()], out_size, *x.shape[dim % x.dim() + 1:]], 1 << (PRECISION_BITS - 1),
                     dtype=torch.int32, device=x.device)
    for idx, coeff in _taps(in_size, out_size, x.device):
        acc += x.index_select(dim, idx).to(torch.int32) * coeff.view(shape)
    return torch.div(acc, 1 << PRECISION_BITS, rounding_mode="floor").clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int, device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """`pil_coefficients` as one (input index, int32 coefficient) pair of tensors per tap, on `device` (made once)."""
    import torch

    xmins, kk = pil_coefficients(in_size, out_size)
    return [(torch.from_numpy(np.minimum(xmins + k, in_size - 1)).to(device),
             torch.from_numpy(kk[:, k].astype(np.int32)).to(device)) for k in range(kk.shape[1])]


def resize_like_pil(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] uint8 -> [B, 3, S, S] uint8, Pillow's `Image.resize((S, S), BICUBIC)` of each frame: its two
    passes in the order the installed Pillow takes them (`vertical_first`; a pass whose size does not change is
    skipped, as Pillow skips it)."""
    h, w = rgb.shape[-2:]
    if vertical_first(w, h, size):
        return _resample(_resample(rgb, size, -2), size, -1)
    return _resample(_resample(rgb, size, -1), size, -2)


@lru_cache(maxsize=64)
def vertical_first(width: int, height: int, size: int) -> bool:
    """Whether Pillow resizes a width x height image to size x size vertical pass first. Pillow 13 does so where the
    height shrinks enough more than the width (its pull request 9549, a cost rule in C); rather than copy that rule,
    Pillow is asked: a random image of that size resized by it once per size and process, against both orders here
    (each pass rounds to uint8, so the orders differ on almost every random image). Where neither order gives
    Pillow's pixels (a Pillow whose arithmetic differs), horizontal first, and the frames are not Pillow's."""
    import torch
    from PIL import Image

    img = np.random.default_rng(width * 7919 + height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))
    x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
    hv = _resample(_resample(x, size, -1), size, -2)[0].permute(1, 2, 0).numpy()
    if np.array_equal(hv, want):
        return False
    vh = _resample(_resample(x, size, -2), size, -1)[0].permute(1, 2, 0).numpy()
    return bool(np.array_equal(vh, want))


def nv12_to_frames(nv12: list[torch.Tensor], width: int, height: int, size: int,
                   signal: YuvSignal) -> torch.Tensor:
    """NV12 frames (each any shape holding one frame, `nv12_planes`) -> [B, 3, S, S] uint8, PyAV's frames."""
    import torch

    planes = [nv12_planes(f, width, height) for f in nv12]
    y, u, v = (torch.stack([p[i] for p in planes]) for i in range(3))
    return resize_like_pil(ffmpeg_rgb(y, u, v, signal), size)
