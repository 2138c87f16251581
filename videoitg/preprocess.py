"""SigLIP image preprocessing (the `SiglipImageProcessor` rule of siglip-so400m-patch14-384):
squash each frame to image_size x image_size with bicubic resampling (no aspect preservation, no crop),
rescale by 1/255, normalise with mean = std = 0.5, i.e. x / 127.5 - 1. The resize and the constants need no torch
(the decode layer's PyAV path runs without it); the tensors' functions import it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

MEAN = 0.5
STD = 0.5


def resize_frame(frame: np.ndarray, image_size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [S, S, 3] uint8, PIL bicubic (what the HF processor does)."""
    if frame.shape[0] == image_size and frame.shape[1] == image_size:
        return frame
    return np.asarray(Image.fromarray(frame).resize((image_size, image_size), Image.BICUBIC))


def pixel_values(frames: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Resized frames [T, 3, S, S] uint8 -> SigLIP pixel values [T, 3, S, S] in `dtype` (None: float32), on the
    frames' device.

    Frames travel as uint8 (a quarter of the bytes) and are normalised where the model runs. The arithmetic is
    float32 whatever `dtype` ((x / 255 - mean) / std, then a cast, as the HF processor followed by `.half()`),
    so the values equal the CPU path's bit for bit. Float input is taken as already normalised and only cast."""
    import torch

    dtype = dtype or torch.float32
    if frames.dtype != torch.uint8:
        return frames.to(dtype)
    x = frames.to(torch.float32)  # one new tensor, then in place: half the time of three temporaries
    return x.div_(255.0).sub_(MEAN).div_(STD).to(dtype)


def normalize(frames_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[T, S, S, 3] uint8 -> [T, 3, S, S] float32 in [-1, 1]."""
    import torch

    return pixel_values(torch.as_tensor(frames_uint8).permute(0, 3, 1, 2))


def preprocess_frames(frames: list[np.ndarray] | np.ndarray, image_size: int) -> torch.Tensor:
    """Decoded RGB frames (any size) -> SigLIP pixel values [T, 3, S, S] float32."""
    import torch

    if len(frames) == 0:
        return torch.empty(0, 3, image_size, image_size)
    return normalize(np.stack([resize_frame(np.asarray(f), image_size) for f in frames]))
