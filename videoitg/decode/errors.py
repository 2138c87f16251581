"""Typed decode errors. Every one is a `videoitg.errors.VideoDecodeError`, so a server can answer the one
request with its message and keep serving; each message names what was wrong with the input."""

from __future__ import annotations

from videoitg.errors import VideoDecodeError


class VideoNotFoundError(VideoDecodeError):
    """The path does not exist or is not a readable file."""


class EmptyVideoError(VideoDecodeError):
    """Zero bytes were given."""


class NotAVideoError(VideoDecodeError):
    """No demuxer recognises the bytes (random data, a text file, an image format FFmpeg cannot open)."""


class NoVideoStreamError(VideoDecodeError):
    """The container opened but holds no video stream (an audio-only file, subtitles, data)."""


class NoFramesError(VideoDecodeError):
    """The video stream holds no decodable frame."""


class UnsupportedCodecError(VideoDecodeError):
    """No decoder for the stream's codec, or the chosen backend cannot decode it."""


class TruncatedVideoError(VideoDecodeError):
    """The file ends early or is corrupt: its index cannot be read or sampled frames are missing."""


class VideoTooLargeError(VideoDecodeError):
    """Over a `DecodeLimits` bound (bytes, frame size, duration or frame count)."""


class DecodeTimeoutError(VideoDecodeError):
    """The decode ran past its time budget (a slow or stalled input)."""


class DecoderUnavailableError(VideoDecodeError):
    """The requested backend is not installed or needs a device this machine lacks."""


__all__ = [
    "VideoDecodeError",
    "VideoNotFoundError",
    "EmptyVideoError",
    "NotAVideoError",
    "NoVideoStreamError",
    "NoFramesError",
    "UnsupportedCodecError",
    "TruncatedVideoError",
    "VideoTooLargeError",
    "DecodeTimeoutError",
    "DecoderUnavailableError",
]
