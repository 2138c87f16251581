"""Data types of the decode layer: limits, container metadata, and the sampled frames handed to the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: `DecodeLimits` (what videoitg.request.limits needs) loads without torch or numpy
    import numpy as np
    import torch

    from videoitg.decode.colour import YuvSignal


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds checked before (and while) decoding; over any of them -> `VideoTooLargeError`.

    The defaults admit every ordinary video up to 4K and 4 hours, and refuse what would exhaust a server
    (8K frames, multi-GB uploads, day-long streams). Pass your own instance to tighten or loosen them.
    """

    max_bytes: int = 4 * 1024**3  # 4 GiB: an hour of 1080p at ~8 Mbit/s is ~3.6 GB
    max_width: int = 4096
    max_height: int = 4096
    max_pixels: int = 4096 * 2160  # DCI 4K; UHD 3840x2160 portrait or landscape fits, 8K does not
    max_duration_s: float = 4 * 3600.0
    max_frames: int = 4 * 3600 * 120  # 4 h at 120 fps
    # Decode work: pixels of every frame the decoder must run through to reach the sampled ones, per encoded byte.
    # Camera footage needs ~100 px/byte, a static screen recording ~5,000; a 140 KB file holding one 4K keyframe
    # and 3,000 skip frames needs 180,000 (25 Gpx: a minute of CPU). Every video may also decode 16 frames per
    # sampled frame whatever its size (`WORK_FLOOR_FRAMES`).
    max_decode_pixels_per_byte: int = 1 << 16

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_width", "max_height", "max_pixels", "max_frames", "max_decode_pixels_per_byte"):
            if getattr(self, name) < 1:
                raise ValueError(f"DecodeLimits.{name} must be >= 1")
        if not self.max_duration_s > 0:
            raise ValueError("DecodeLimits.max_duration_s must be > 0")


@dataclass(frozen=True)
class VideoInfo:
    """What the container says (and, where it lies, what the packet index shows)."""

    total_frames: int  # presentation frames in the video stream (0 when unknown and not counted)
    fps: float  # average frame rate used by the sampling rule
    duration_s: float  # seconds from the first frame to the end of the last one
    codec: str  # FFmpeg codec name: "h264", "vp9", "mjpeg", ...
    width: int  # coded size, before rotation
    height: int
    rotation: int  # degrees counter-clockwise the frames must turn to display upright (0/90/180/270)
    container: str  # FFmpeg demuxer name(s)
    variable_frame_rate: bool = False
    # "container" (header count) | "index" (packets counted) | "estimate" (duration x fps)
    frame_count_source: str = "container"
    has_audio: bool = False
    colour: YuvSignal | None = None  # how FFmpeg reads the first frame's YUV (None when no frame decodes)


@dataclass
class SampledFrames:
    """Frames ready for the SigLIP vision tower, plus where they came from in the original video."""

    # [T, 3, S, S]: float32 x / 127.5 - 1 (SigLIP so400m rule), or with output="uint8" the resized RGB frames
    # (normalised where the model runs: videoitg.preprocess.pixel_values); a torch tensor, or with
    # `decode_video(numpy=True)` PyAV's numpy array
    pixel_values: torch.Tensor | np.ndarray
    frame_indices: list[int]  # original frame numbers (videoitg.sampling.sample_frame_indices)
    timestamps: list[float]  # presentation time of each frame, seconds from the first frame
    fps: float  # the average frame rate the indices were sampled with
    total_frames: int
    decoder: str  # backend that ran: "pyav", "dali-cpu", "dali-gpu" or "nvc-gpu" (PyNvVideoCodec)
    info: VideoInfo | None = field(default=None, repr=False)
    decode_s: float = 0.0  # wall seconds spent in the whole call
    # a decode pool's decode (`videoitg.decode.pool`): pieces each session decoded ("dali-gpu:3", "pyav:0": an
    # overflow thread), and the frames the pieces ran through
    pieces: dict[str, int] = field(default_factory=dict, repr=False)
    decoded_frames: int = 0

    def __len__(self) -> int:
        return len(self.frame_indices)
