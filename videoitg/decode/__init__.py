"""Video decoding: encoded bytes or a file in, only the sampled frames decoded, SigLIP-ready tensors out.

    from videoitg.decode import decode_video, probe_video
    frames = decode_video("clip.mp4")   # SampledFrames: pixel_values [T,3,384,384], frame_indices, ...
    info = probe_video("clip.mp4")      # VideoInfo from the container (packet count if it lies)
    images = decode_full_frames("clip.mp4", [0, 30])  # those frame numbers at the video's size, upright RGB

Backends: "pyav" (FFmpeg, every codec, CPU), "dali-cpu" (VP8/VP9/MJPEG), "dali-gpu" (NVDEC); "auto" picks one
and `SampledFrames.decoder` says which ran. Every failure is a `videoitg.errors.VideoDecodeError` subclass.
See docs/decoding.md.

The decoders (torch, PyAV) load on first use of a name that needs them, so `videoitg.limits` and the CLI's
`--help`, which need only `DecodeLimits`, start without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from videoitg.decode.errors import (
    DecoderUnavailableError,
    DecodeTimeoutError,
    EmptyVideoError,
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoDecodeError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from videoitg.decode.structs import DecodeLimits, SampledFrames, VideoInfo

if TYPE_CHECKING:
    from videoitg.decode.api import (
        DecodePlan,
        decode_full_frames,
        decode_video,
        plan_decode,
        probe_video,
        stream_video,
    )
    from videoitg.decode.backends import DECODERS, dali_available
    from videoitg.decode.parallel import FrameStream

# name -> submodule that defines it, imported on first access (PEP 562)
_LAZY = {
    "decode_video": "api", "decode_full_frames": "api", "probe_video": "api", "plan_decode": "api",
    "DecodePlan": "api", "stream_video": "api", "FrameStream": "parallel", "DECODERS": "backends",
    "dali_available": "backends",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "decode_video", "decode_full_frames", "probe_video", "plan_decode", "DecodePlan", "stream_video", "FrameStream",
    "DECODERS", "dali_available", "DecodeLimits", "SampledFrames", "VideoInfo",
    "VideoDecodeError", "VideoNotFoundError", "EmptyVideoError", "NotAVideoError", "NoVideoStreamError",
    "NoFramesError", "UnsupportedCodecError", "TruncatedVideoError", "VideoTooLargeError",
    "DecodeTimeoutError", "DecoderUnavailableError",
]
