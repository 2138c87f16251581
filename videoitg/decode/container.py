"""Open a video with PyAV, map FFmpeg failures to typed errors, read metadata and build the packet index (demux
only: the frame count, timestamps and keyframes where the header lies or says nothing)."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import stat
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import av.error

from videoitg.decode.budget import Deadline
from videoitg.decode.colour import YuvSignal, signal_of
from videoitg.decode.errors import (
    EmptyVideoError,
    NoFramesError,
    NotAVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedCodecError,
    VideoNotFoundError,
    VideoTooLargeError,
)
from videoitg.decode.structs import DecodeLimits, VideoInfo

Source = str | Path | bytes | bytearray | memoryview

# Leading bytes of container formats; used only to word an open failure ("truncated MP4" vs "not a video").
_SIGNATURES: list[tuple[int, bytes, str]] = [
    (4, b"ftyp", "MP4/MOV"), (4, b"moov", "MP4/MOV"), (4, b"mdat", "MP4/MOV"), (4, b"free", "MP4/MOV"),
    (4, b"wide", "MP4/MOV"), (0, b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (0, b"RIFF", "AVI/RIFF"),
    (0, b"FLV", "FLV"), (0, b"OggS", "Ogg"), (0, b"DKIF", "IVF"), (0, b"\x00\x00\x01\xba", "MPEG-PS"),
]


def sniff_format(head: bytes) -> str | None:
    for off, sig, name in _SIGNATURES:
        if head[off:off + len(sig)] == sig:
            return name
    if len(head) >= 189 and head[0] == 0x47 and head[188] == 0x47:
        return "MPEG-TS"
    return None


def describe(source: Source) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{len(source)} bytes>"


@dataclass
class OpenedSource:
    """A source checked against the byte limit; `file()` gives what av.open reads."""

    source: Source
    nbytes: int | None  # None for pipes / FIFOs whose size is unknown
    head: bytes

    def file(self) -> str | BinaryIO:
        if isinstance(self.source, (str, Path)):
            return str(self.source)
        return io.BytesIO(self.source)

    def read_all(self, limits: DecodeLimits) -> bytes:
        """The whole encoded stream in memory (DALI takes bytes), still within the byte limit."""
        if not isinstance(self.source, (str, Path)):
            return bytes(self.source)
        with open(self.source, "rb") as f:
            data = f.read(limits.max_bytes + 1)
        if len(data) > limits.max_bytes:
            raise VideoTooLargeError(f"{describe(self.source)} is over the {limits.max_bytes} byte limit")
        return data


def check_source(source: Source, limits: DecodeLimits) -> OpenedSource:
    """Empty / missing / over-size checks that need no demuxer."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        n = len(source)
        if n == 0:
            raise EmptyVideoError("video input is empty (0 bytes)")
        if n > limits.max_bytes:
            raise VideoTooLargeError(f"video input is {n} bytes, over the {limits.max_bytes} byte limit "
                                     "(max_video_bytes)")
        return OpenedSource(source, n, bytes(source[:192]))
    if not isinstance(source, (str, Path)):
        raise TypeError(f"video source must be a path or bytes, got {type(source).__name__}")
    path = Path(source)
    try:
        st = path.stat()
    except OSError as e:
        raise VideoNotFoundError(f"video file not found or unreadable: {path} ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise VideoNotFoundError(f"video path is a directory, not a file: {path}")
    if not stat.S_ISREG(st.st_mode):  # FIFO / device: size unknown, the time budget guards the reads
        return OpenedSource(path, None, b"")
    if st.st_size == 0:
        raise EmptyVideoError(f"video file is empty (0 bytes): {path}")
    if st.st_size > limits.max_bytes:
        raise VideoTooLargeError(f"video file {path} is {st.st_size} bytes, over the "
                                 f"{limits.max_bytes} byte limit")
    if not os.access(path, os.R_OK):
        raise VideoNotFoundError(f"video file is not readable: {path}")
    with open(path, "rb") as f:
        head = f.read(192)
    return OpenedSource(path, st.st_size, head)


def open_container(src: OpenedSource) -> av.container.InputContainer:
    try:
        return av.open(src.file(), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as e:  # InvalidData, EOF, EIO, ...: FFmpeg's wording is all we have
        kind = sniff_format(src.head)
        if kind is not None:
            raise TruncatedVideoError(f"{describe(src.source)} looks like {kind} but cannot be parsed "
                                      f"(truncated or corrupt: {e.strerror})") from None
        raise NotAVideoError(f"{describe(src.source)} is not a recognisable video file "
                             f"({e.strerror})") from None


def demux(container: av.container.InputContainer,
          stream: av.video.stream.VideoStream) -> contextlib.closing[Iterator[av.Packet]]:
    """`container.demux(stream)` for a `with`, closed when the block is left. PyAV 18's demux generator left
    before its end (a break, a return, an error) and not closed leaks what it allocated (0.14 KiB each, measured;
    closed: nothing). A decode leaves several so (it stops at its last sampled frame, reads only the first one for
    the rotation, restarts after a seek): about 1 KiB a video, for every video a served decode step decodes."""
    return contextlib.closing(container.demux(stream))


def select_video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    """First real video stream (cover-art pictures in audio files do not count)."""
    streams = [s for s in container.streams.video
               if not (s.disposition & av.stream.Disposition.attached_pic)]
    if not streams:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise NoVideoStreamError(f"{name} has no video stream (streams: {', '.join(kinds)})")
    stream = streams[0]
    cc = stream.codec_context
    if cc is None or cc.codec is None or cc.name in (None, "", "none"):
        raise UnsupportedCodecError(f"{name}: the video stream's codec is unknown; no decoder supports it")
    return stream


def check_frame_size(width: int, height: int, limits: DecodeLimits, name: str) -> None:
    if width <= 0 or height <= 0:
        return  # unknown in the header; checked again on the first decoded frame
    if width > limits.max_width or height > limits.max_height or width * height > limits.max_pixels:
        raise VideoTooLargeError(
            f"{name}: frames are {width}x{height}, over the limit ({limits.max_width}x{limits.max_height}, "
            f"{limits.max_pixels} pixels)")


def _rate(r: Fraction | None) -> float:
    if r is None:
        return 0.0
    try:
        v = float(r)
    except (ZeroDivisionError, TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) and v > 0 else 0.0


@dataclass
class FrameIndex:
    """Every frame of the stream in presentation order (from packets, without decoding)."""

    pts: list[int]  # sorted presentation timestamps, stream time_base
    key_pts: list[int]  # sorted pts of keyframes
    time_base: Fraction
    fps: float
    vfr: bool
    ordinal: bool = False  # packets had no timestamps: "pts" are stream-order numbers, decode sequentially
    # keyframes after which a packet (in decode order) shows earlier: an open GOP's leading frames reference the GOP
    # before, so a decoder cannot start there and give every frame after it
    open_keys: frozenset[int] = frozenset()

    @property
    def total(self) -> int:
        return len(self.pts)

    def seconds(self, i: int) -> float:
        return float((self.pts[i] - self.pts[0]) * self.time_base)

    def keyframe_at_or_before(self, pts: int) -> int | None:
        j = bisect_right(self.key_pts, pts) - 1
        return self.key_pts[j] if j >= 0 else None

    def start_at_or_before(self, position: int) -> int:
        """The position (presentation order) of the last frame at or before `position` where a decoder can start
        and decode every frame from there on: a keyframe that is not an open GOP's (0, the stream's start, where
        there is none)."""
        if self.ordinal:
            return 0
        j = bisect_right(self.key_pts, self.pts[position]) - 1
        while j >= 0 and self.key_pts[j] in self.open_keys:
            j -= 1
        return bisect_left(self.pts, self.key_pts[j]) if j >= 0 else 0


def _from_first(end_s: float, start_s: float) -> float:
    """A duration some containers (Matroska's segment duration and DURATION tag) count from time 0, not from the
    first timestamp: a 3 s clip whose timestamps start at 5 h would pass for 5 h long."""
    return end_s - start_s if 0 < start_s < end_s else end_s


def header_info(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> dict:
    tb = stream.time_base or Fraction(1, 1_000_000)
    start = float(stream.start_time * tb) if stream.start_time else 0.0
    if stream.duration:  # the stream's own length
        stream_dur = float(stream.duration * tb)
    else:
        stream_dur = _from_first(_tag_seconds(stream.metadata.get("DURATION")), start)
    container_start = container.start_time / av.time_base if container.start_time else 0.0
    dur = stream_dur or (_from_first(container.duration / av.time_base, container_start)
                         if container.duration else 0.0)
    fps = _rate(stream.average_rate) or _rate(stream.guessed_rate) or _rate(stream.base_rate)
    cc = stream.codec_context
    return {"frames": int(stream.frames or 0), "fps": fps, "duration": dur, "stream_duration": stream_dur,
            "codec": cc.name,
            "width": int(cc.width or 0), "height": int(cc.height or 0),
            "container": container.format.name, "has_audio": bool(container.streams.audio)}


def _tag_seconds(tag: str | None) -> float:
    """Matroska's per-stream "DURATION" tag, "HH:MM:SS.nnnnnnnnn" (written when the muxer finished)."""
    m = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d*)?)", (tag or "").strip())
    return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3]) if m else 0.0


def check_truncation(h: dict, index: FrameIndex, name: str) -> None:
    """The header (written after the last frame) promises more than the packets deliver: the tail is gone."""
    if h["frames"] > 0 and index.total < 0.98 * h["frames"] - 1:
        raise TruncatedVideoError(f"{name}: the header lists {h['frames']} frames but only {index.total} "
                                  "are present (file truncated)")
    declared = h["stream_duration"]
    have = float((index.pts[-1] - index.pts[0]) * index.time_base) + 1.0 / index.fps
    if declared > 0 and have < 0.95 * declared - 0.5:
        raise TruncatedVideoError(f"{name}: the header declares {declared:.2f} s of video but the frames "
                                  f"present end at {have:.2f} s (file truncated)")


def check_header_limits(h: dict, limits: DecodeLimits, name: str) -> None:
    check_frame_size(h["width"], h["height"], limits, name)
    if h["duration"] > limits.max_duration_s:
        raise VideoTooLargeError(f"{name}: duration {h['duration']:.0f} s is over the "
                                 f"{limits.max_duration_s:.0f} s limit")
    if h["frames"] > limits.max_frames:
        raise VideoTooLargeError(f"{name}: {h['frames']} frames, over the {limits.max_frames} frame limit")


def build_index(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                header_fps: float, limits: DecodeLimits, deadline: Deadline, name: str) -> FrameIndex:
    """Demux (no decode) the video stream once: pts of every frame, keyframes, true frame count and rate."""
    pts: list[int] = []
    keys: list[int] = []
    open_keys: set[int] = set()
    seq = 0
    ordinal = False
    try:
        with demux(container, stream) as packets:
            for n, packet in enumerate(packets):
                if n % 512 == 0:
                    deadline.check("indexing packets")
                if packet.size == 0 or packet.is_discard:  # flush packet / edit-list pre-roll, never displayed
                    continue
                t = packet.pts if packet.pts is not None else packet.dts
                if t is None or ordinal:  # raw streams without timestamps: number frames in stream order
                    if not ordinal:
                        ordinal, pts, keys = True, list(range(seq)), [0]
                    t = seq
                seq += 1
                pts.append(t)
                if packet.is_keyframe:
                    keys.append(t)
                elif not ordinal:
                    _mark_open(keys, open_keys, t)
                if len(pts) > limits.max_frames:
                    raise VideoTooLargeError(f"{name}: more than {limits.max_frames} frames (frame limit)")
    except (av.error.FFmpegError, IndexError) as e:  # InvalidData, EOF, EIO, EAGAIN...: the readable part ends here
        # IndexError: PyAV's demux looks up a stream that a damaged container announced only mid-stream.
        if not pts:
            reason = e.strerror if isinstance(e, av.error.FFmpegError) else "a packet of an unknown stream"
            raise TruncatedVideoError(f"{name}: cannot read any video packet ({reason})") from None
        # A damaged tail: keep what was indexed; sampled frames past the damage are reported missing later.
    if not pts:
        raise NoFramesError(f"{name}: the video stream has no frames")
    pts.sort()
    keys = sorted(set(keys))
    if not keys or keys[0] > pts[0]:
        keys.insert(0, pts[0])  # streams whose packets carry no key flag: decode from the start
    tb = stream.time_base or Fraction(1, 1_000_000)
    fps = header_fps
    vfr = False
    if ordinal:
        # Raw elementary streams (.h264, .hevc) carry no timestamps: the codec's own timing (guessed_rate, from
        # the SPS) over the demuxer's assumed 25 fps, and "pts" are frame numbers, so the time base is 1/fps.
        fps = _rate(stream.guessed_rate) or header_fps or 25.0
        tb = Fraction(1, 1) / Fraction(fps).limit_denominator(1001 * 1000)
    elif len(pts) >= 2 and pts[-1] > pts[0]:
        span_s = float((pts[-1] - pts[0]) * tb)
        measured = (len(pts) - 1) / span_s
        deltas = [b - a for a, b in zip(pts, pts[1:], strict=False) if b > a]
        vfr = bool(deltas) and max(deltas) > 1.5 * min(deltas)
        # Trust the header's (exact, e.g. 30000/1001) rate when it agrees with the packets; otherwise the
        # container lied or the rate varies, and the measured average is what the frame numbers mean.
        if not header_fps or abs(measured - header_fps) > 0.01 * header_fps:
            fps = measured
    if not fps:
        fps = 1.0  # a single frame without a rate: only frame 0 can be sampled, the value is immaterial
    duration = float((pts[-1] - pts[0]) * tb) + 1.0 / fps
    if duration > limits.max_duration_s:
        raise VideoTooLargeError(f"{name}: duration {duration:.0f} s is over the "
                                 f"{limits.max_duration_s:.0f} s limit")
    return FrameIndex(pts=pts, key_pts=keys, time_base=tb, fps=fps, vfr=vfr, ordinal=ordinal,
                      open_keys=frozenset() if ordinal else frozenset(open_keys))


def _mark_open(keys: list[int], open_keys: set[int], t: int) -> None:
    """A packet showing at `t` after the keyframes `keys` (decode order): each of the latest keyframes shown after
    it is an open GOP's (keyframes come in ascending order: the walk back stops at one shown earlier, or at one
    already marked, so a stream costs one pass however long)."""
    for k in reversed(keys):
        if k <= t or k in open_keys:
            return
        open_keys.add(k)


def box_truncation(src: OpenedSource) -> str | None:
    """For an MP4/MOV: the first top-level box that claims more bytes than the file has (a cut file), else None.

    A faststart file cut inside `moov` can open with a partial stream table and fail as "no video stream" or
    "codec unknown"; its box sizes still tell the truth."""
    if src.nbytes is None or sniff_format(src.head) != "MP4/MOV":
        return None
    f = src.file()
    fh = open(f, "rb") if isinstance(f, str) else f  # closed below
    try:
        off = 0
        while off + 8 <= src.nbytes:
            fh.seek(off)
            head = fh.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
            if size == 1 and len(head) >= 16:
                size = int.from_bytes(head[8:16], "big")  # 64-bit size
            if size == 0:
                return None  # "to the end of the file"
            if size < 8:
                return None  # not a box structure this check understands: leave it to FFmpeg
            if off + size > src.nbytes:
                return f"the '{kind}' box at byte {off} needs {size} bytes but the file ends after {src.nbytes - off}"
            off += size
        return None
    finally:
        fh.close()


WORK_FLOOR_FRAMES = 16  # frames any video may decode per sampled frame, whatever its encoded size


def frames_to_decode(index: FrameIndex, frame_numbers: list[int]) -> int:
    """Frames the sampled decode runs through (presentation order): from a sampled frame's keyframe when that lies
    past the decoder's position (a seek), else onward from the position, up to the sampled frame."""
    if not frame_numbers:
        return 0
    if index.ordinal:
        return max(frame_numbers) + 1  # no seeking: from the start
    n, pos = 0, -1
    for i in sorted(set(frame_numbers)):
        key = index.keyframe_at_or_before(index.pts[i])
        k = bisect_left(index.pts, key) if key is not None else 0
        start = k if k > pos else pos + 1
        n += i - start + 1
        pos = i
    return n


def decode_work_limit(nbytes: int | None, sampled: int, frame_pixels: int, limits: DecodeLimits) -> float:
    """Pixels a decode may run through: proportional to the encoded size, with a floor per sampled frame.
    Unknown sizes (pipes) are bounded by the time budget only."""
    if nbytes is None:
        return math.inf
    return max(limits.max_decode_pixels_per_byte * nbytes, WORK_FLOOR_FRAMES * sampled * frame_pixels)


def check_decode_work(index: FrameIndex, frame_numbers: list[int], width: int, height: int,
                      nbytes: int | None, limits: DecodeLimits, name: str) -> float:
    """Refuse, before decoding, a video whose sampled frames cost more to reach than its size allows; returns
    the limit for the decoder's own running count (`Deadline.spend`), which also covers re-seeks."""
    px = max(width, 1) * max(height, 1)
    limit = decode_work_limit(nbytes, len(set(frame_numbers)), px, limits)
    n = frames_to_decode(index, frame_numbers)
    if n * px > limit:
        raise VideoTooLargeError(
            f"{name}: reaching the {len(set(frame_numbers))} sampled frames means decoding {n} frames of "
            f"{width}x{height} ({n * px / 1e9:.1f} Gpx) from {nbytes} bytes, over the decode work limit of "
            f"{limit / 1e9:.1f} Gpx (max_decode_pixels_per_byte={limits.max_decode_pixels_per_byte})")
    return 2 * limit  # the decoder's count: room for the re-seeks damaged files cause


def first_frame_facts(container: av.container.InputContainer,
                      stream: av.video.stream.VideoStream) -> tuple[int, YuvSignal | None]:
    """Display rotation (from the display matrix PyAV exposes per frame) and how FFmpeg reads the YUV samples
    (colour space and range tags), from the first decoded frame; (0, None) when none decodes. Rewinds first:
    indexing leaves the demuxer at the end."""
    try:
        container.seek(0, backward=True, any_frame=False)  # AV_TIME_BASE units: the very start
        stream.codec_context.flush_buffers()
        with demux(container, stream) as packets:
            for packet in packets:
                for frame in packet.decode():  # container.decode(stream), its demux closed
                    return normalize_rotation(frame.rotation), signal_of(frame)
    except (av.error.FFmpegError, IndexError):  # see build_index
        return 0, None
    return 0, None


def normalize_rotation(deg: float | int | None) -> int:
    if not deg:
        return 0
    r = int(round(float(deg) / 90.0)) * 90 % 360
    return r


def info_from(h: dict, index: FrameIndex | None, rotation: int, colour: YuvSignal | None = None) -> VideoInfo:
    if index is not None:
        return VideoInfo(total_frames=index.total, fps=index.fps,
                         duration_s=float((index.pts[-1] - index.pts[0]) * index.time_base) + 1.0 / index.fps,
                         codec=h["codec"], width=h["width"], height=h["height"], rotation=rotation,
                         container=h["container"], variable_frame_rate=index.vfr, frame_count_source="index",
                         has_audio=h["has_audio"], colour=colour)
    frames, source = h["frames"], "container"
    if frames <= 0 and h["duration"] > 0 and h["fps"] > 0:
        frames, source = int(round(h["duration"] * h["fps"])), "estimate"
    return VideoInfo(total_frames=frames, fps=h["fps"], duration_s=h["duration"], codec=h["codec"],
                     width=h["width"], height=h["height"], rotation=rotation, container=h["container"],
                     frame_count_source=source, has_audio=h["has_audio"], colour=colour)
