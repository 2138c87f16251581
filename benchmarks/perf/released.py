"""The released CPU side of a request (lmms_eval `load_video` + `image_processor.preprocess`): a full CPU decode
up to every sampled frame, PIL images, the HF SigLIP image processor on the CPU, fp32 pixel values.

The released decoder is decord (FFmpeg underneath, its own threads). Where decord is not installed, PyAV decodes
every frame in order with FFmpeg's frame threads and keeps the sampled ones, which is the work decord does for
1-fps sampling of a long-GOP clip; the result says which decoder ran.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from videoitg.sampling import SamplingParams, sample_frame_indices


def siglip_processor(image_size: int) -> Any:
    """The HF SigLIP processor (PIL backend, as transformers 4.x ran it) with siglip-so400m's preprocessor values,
    built locally (no hub)."""
    try:
        from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil as Proc
    except ImportError:  # transformers < 5 names the PIL processor SiglipImageProcessor
        from transformers import SiglipImageProcessor as Proc
    return Proc(do_resize=True, size={"height": image_size, "width": image_size}, resample=3, do_rescale=True,
                rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _decode_decord(path: Path, params: SamplingParams) -> tuple[np.ndarray, list[int]]:
    import decord

    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    idx = sample_frame_indices(int(len(vr)), vr.get_avg_fps(), params)
    return vr.get_batch(idx).asnumpy(), idx


def _decode_pyav(path: Path, params: SamplingParams) -> tuple[np.ndarray, list[int]]:
    import av

    from videoitg.decode import probe_video

    info = probe_video(path, count_frames=True, time_budget_s=None)
    idx = sample_frame_indices(info.total_frames, info.fps, params)
    want, frames = set(idx), {}
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            if i in want:
                frames[i] = f.to_ndarray(format="rgb24")
            if i >= idx[-1]:
                break
    return np.stack([frames[i] for i in idx]), idx


def released_pixels(path: Path, image_size: int, params: SamplingParams,
                    processor: Any = None) -> tuple[torch.Tensor, list[int], dict[str, Any]]:
    """[T, 3, S, S] float32 pixel values, the frame numbers, and the seconds of each stage."""
    from PIL import Image

    processor = processor or siglip_processor(image_size)
    t0 = time.perf_counter()
    try:
        frames, idx = _decode_decord(path, params)
        decoder = "decord"
    except ImportError:
        frames, idx = _decode_pyav(path, params)
        decoder = "pyav (every frame, in order)"
    t1 = time.perf_counter()
    images = [Image.fromarray(f) for f in frames]
    del frames
    pv = processor(images=images, return_tensors="pt")["pixel_values"]
    return pv, idx, {"decoder": decoder, "decode": t1 - t0, "preprocess": time.perf_counter() - t1}
