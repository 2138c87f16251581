"""Video decoding: a file or encoded bytes in, only the sampled frames decoded, SigLIP-ready tensors out; every
failure a `videoitg.errors.VideoDecodeError` subclass (docs/decoding.md). Decoders by name: `videoitg.decoders`.
The decoders (torch, PyAV) load on first use of a name that needs them, so the CLI's `--help` starts without them.
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
    from videoitg.decode.choice import dali_available
    from videoitg.decode.parallel import FrameStream

# name -> submodule that defines it, imported on first access (PEP 562)
_LAZY = {
    "decode_video": "api", "decode_full_frames": "api", "probe_video": "api", "plan_decode": "api",
    "DecodePlan": "api", "stream_video": "api", "FrameStream": "parallel",
    "dali_available": "choice",
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
    "dali_available", "DecodeLimits", "SampledFrames", "VideoInfo",
    "VideoDecodeError", "VideoNotFoundError", "EmptyVideoError", "NotAVideoError", "NoVideoStreamError",
    "NoFramesError", "UnsupportedCodecError", "TruncatedVideoError", "VideoTooLargeError",
    "DecodeTimeoutError", "DecoderUnavailableError",
]
