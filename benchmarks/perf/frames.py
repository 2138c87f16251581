"""Frames travel as uint8 and are normalised where the model runs: a quarter of the bytes of fp32 pixel values
over PCIe, and a pinned host buffer makes the copy truly asynchronous (from pageable memory `non_blocking` is
silently synchronous).

`pixel_values` has the signature and the arithmetic of the decode layer's uint8 path (`[T, 3, S, S]` uint8 in,
`(x / 255 - 0.5) / 0.5` in fp32, then a cast), so its values equal `videoitg.preprocess.normalize` bit for bit.
"""

from __future__ import annotations

import torch

from videoitg.preprocess import MEAN, STD


def pixel_values(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Resized frames [T, 3, S, S] uint8 -> SigLIP pixel values in `dtype`, on the frames' device. Float input is
    taken as already normalised and only cast."""
    if frames.dtype != torch.uint8:
        return frames.to(dtype)
    return frames.to(torch.float32).div_(255.0).sub_(MEAN).div_(STD).to(dtype)


def upload(frames: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 frames on the host -> normalised pixel values on `device`, through a pinned buffer (CUDA)."""
    if device.type == "cuda" and not frames.is_pinned():
        frames = frames.pin_memory()
    return pixel_values(frames.to(device, non_blocking=device.type == "cuda"), dtype)
