"""NVIDIA DALI backend: one pipeline definition for the CPU decoder (VP8/VP9/MJPEG) and the GPU `mixed`
(NVDEC) decoder, with resize + SigLIP normalisation in the same graph.

`video_pipeline(device=...)` is what the Triton DALI model would serve (`serialize_pipeline` writes it):
inputs "VIDEO" (encoded bytes, uint8 [N]), "FRAMES" (int32 frame numbers, from the sampling rule) and "COLOUR"
(float32 [3, 3], `colour_input`: the matrix from DALI's YUV->RGB conversion onto FFmpeg's for this video, see
videoitg/decode/colour.py), output float32 [F, 3, S, S]. On "mixed" the decode, resize, colour map and
normalise run on the GPU and the output stays there for the vision encoder. The GPU variant is UNVERIFIED here:
no GPU was lent to this task.

Memory: DALI materialises every requested frame at full size before the resize, so the frame list is fed in
chunks sized to `CHUNK_BYTES` of raw frames; each chunk is one pipeline run over the same bytes.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from videoitg.decode.budget import Deadline
from videoitg.decode.colour import YuvSignal, dali_correction
from videoitg.decode.errors import UnsupportedCodecError, VideoDecodeError

CHUNK_BYTES = 512 * 1024**2  # raw RGB frames held at once before the resize, per pipeline run
_pipes: dict[tuple[str, int, int], object] = {}
_locks: dict[tuple[str, int, int], threading.Lock] = {}
_registry_lock = threading.Lock()


def video_pipeline(device: str = "cpu", image_size: int = 384, batch_size: int = 1, num_threads: int = 2,
                   device_id: int | None = None):  # -> nvidia.dali.Pipeline
    """Decode the given frame numbers of each encoded video, squash to S x S (cubic, antialiased), map DALI's RGB
    onto FFmpeg's (the "COLOUR" matrix, clipped to 0..255), normalise to x / 127.5 - 1, layout FCHW.
    device: "cpu" or "mixed" (NVDEC + GPU resize/colour/normalise)."""
    import nvidia.dali.fn as fn
    import nvidia.dali.math as dmath
    import nvidia.dali.types as types
    from nvidia.dali import pipeline_def

    if device not in ("cpu", "mixed"):
        raise ValueError(f"device must be 'cpu' or 'mixed', got {device!r}")
    if device_id is None:
        device_id = 0 if device == "mixed" else None

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, device_id=device_id, prefetch_queue_depth=1)
    def pipe():  # type: ignore[no-untyped-def]
        encoded = fn.external_source(name="VIDEO", dtype=types.UINT8, ndim=1, device="cpu")
        frames = fn.external_source(name="FRAMES", dtype=types.INT32, ndim=1, device="cpu")
        colour = fn.external_source(name="COLOUR", dtype=types.FLOAT, ndim=2, device="cpu")  # [3, 3]
        video = fn.decoders.video(encoded, frames=frames, pad_mode="edge", device=device)  # F,H,W,C uint8
        video = fn.resize(video, size=[image_size, image_size], mode="stretch",
                          interp_type=types.INTERP_CUBIC, antialias=True)
        # The colour map after the resize (both linear, so they commute up to rounding and clipping): on the
        # S x S frames it costs a fraction of what it costs at full size on CPU.
        video = dmath.clamp(fn.coord_transform(video, M=colour, dtype=types.FLOAT), 0.0, 255.0)
        return fn.crop_mirror_normalize(video, dtype=types.FLOAT, output_layout="FCHW",
                                        mean=[127.5] * 3, std=[127.5] * 3)

    return pipe()


def serialize_pipeline(path: str, device: str = "mixed", image_size: int = 384, batch_size: int = 1) -> None:
    """Write the pipeline for Triton's DALI backend (`model.dali`). Serialising needs no GPU."""
    p = video_pipeline(device=device, image_size=image_size, batch_size=batch_size)
    p.serialize(filename=path)


def _pipeline(device: str, image_size: int, device_id: int) -> tuple[object, threading.Lock]:
    key = (device, image_size, device_id)
    with _registry_lock:
        if key not in _pipes:
            p = video_pipeline(device=device, image_size=image_size,
                               device_id=device_id if device == "mixed" else None)
            p.build()
            _pipes[key] = p
            _locks[key] = threading.Lock()
        return _pipes[key], _locks[key]


def colour_input(signal: YuvSignal | None) -> np.ndarray:
    """The pipeline's "COLOUR" input for a video whose first frame FFmpeg reads as `signal` (None: identity)."""
    return dali_correction(signal)


def decode(backend: str, data: bytes, frame_numbers: list[int], image_size: int, size_wh: tuple[int, int],
           deadline: Deadline, name: str, device: object = None, colour: YuvSignal | None = None) -> torch.Tensor:
    """Run the pipeline over `data` for `frame_numbers`; [T,3,S,S] float32 (on the GPU for "dali-gpu").
    `colour`: how FFmpeg reads the video's YUV (`videoitg.decode.colour.signal_of` its first frame)."""
    dali_device = "mixed" if backend == "dali-gpu" else "cpu"
    target = torch.device("cpu")  # CPU results: the caller copies them to its device afterwards
    if dali_device == "mixed":
        target = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        if target.type != "cuda":
            target = torch.device("cuda", torch.cuda.current_device())
    device_id = target.index if target.index is not None else 0
    pipe, lock = _pipeline(dali_device, image_size, device_id)
    w, h = size_wh
    per_chunk = max(1, CHUNK_BYTES // max(1, w * h * 3))
    encoded = np.frombuffer(data, dtype=np.uint8)
    mt = colour_input(colour)
    out = torch.empty(len(frame_numbers), 3, image_size, image_size, dtype=torch.float32, device=target)
    for start in range(0, len(frame_numbers), per_chunk):
        deadline.check(f"decoding with {backend}")
        chunk = np.asarray(frame_numbers[start:start + per_chunk], dtype=np.int32)
        with lock:
            pipe.feed_input("VIDEO", [encoded])
            pipe.feed_input("FRAMES", [chunk])
            pipe.feed_input("COLOUR", [mt])
            try:
                (result,) = pipe.run()
            except RuntimeError as e:
                msg = str(e).splitlines()[0] if str(e) else type(e).__name__
                if "codec" in msg.lower() or "not supported" in msg.lower():
                    raise UnsupportedCodecError(f"{name}: DALI ({dali_device}) cannot decode it: "
                                                f"{msg}") from None
                raise VideoDecodeError(f"{name}: DALI ({dali_device}) failed: {msg}") from None
            _copy_out(result, out[start:start + len(chunk)], dali_device)
    return out


def _copy_out(result: object, dst: torch.Tensor, dali_device: str) -> None:
    shape = tuple(result.as_tensor().shape())[1:]  # type: ignore[attr-defined]
    if shape != tuple(dst.shape):
        raise VideoDecodeError(f"DALI returned frames of shape {shape}, expected {tuple(dst.shape)}")
    if dali_device == "cpu":
        dst.copy_(torch.from_numpy(np.asarray(result.as_tensor())[0]))  # type: ignore[attr-defined]
        return
    from nvidia.dali.plugin.pytorch import feed_ndarray  # GPU path: copy device-to-device, no host trip

    feed_ndarray(result.as_tensor(), dst.unsqueeze(0), cuda_stream=torch.cuda.current_stream())  # type: ignore
