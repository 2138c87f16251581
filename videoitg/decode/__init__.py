"""Video decoding: encoded bytes or a file in, only the sampled frames decoded, SigLIP-ready tensors out.

    from videoitg.decode import decode_video, probe_video
    frames = decode_video("clip.mp4")   # SampledFrames: pixel_values [T,3,384,384], frame_indices, ...
    info = probe_video("clip.mp4")      # VideoInfo from the container (packet count if it lies)

Backends: "pyav" (FFmpeg, every codec, CPU), "dali-cpu" (VP8/VP9/MJPEG), "dali-gpu" (NVDEC); "auto" picks one
and `SampledFrames.decoder` says which ran. Every failure is a `videoitg.errors.VideoDecodeError` subclass.
See docs/decoding.md.
"""

from videoitg.decode.api import DecodePlan, decode_video, plan_decode, probe_video, stream_video
from videoitg.decode.backends import DECODERS, dali_available
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
from videoitg.decode.parallel import FrameStream
from videoitg.decode.structs import DecodeLimits, SampledFrames, VideoInfo

__all__ = [
    "decode_video", "probe_video", "plan_decode", "DecodePlan", "stream_video", "FrameStream", "DECODERS",
    "dali_available", "DecodeLimits", "SampledFrames", "VideoInfo",
    "VideoDecodeError", "VideoNotFoundError", "EmptyVideoError", "NotAVideoError", "NoVideoStreamError",
    "NoFramesError", "UnsupportedCodecError", "TruncatedVideoError", "VideoTooLargeError",
    "DecodeTimeoutError", "DecoderUnavailableError",
]
