"""The PyAV decoder (FFmpeg, every codec, CPU): only the GOPs that hold sampled frames are decoded, and each
sampled frame is converted, squashed and normalised into a preallocated output, so memory stays one array (numpy:
the decode itself needs no torch)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import av
import av.error
import numpy as np

from videoitg.decode.budget import Deadline
from videoitg.decode.container import FrameIndex, check_frame_size, demux
from videoitg.decode.errors import TruncatedVideoError, UnsupportedCodecError
from videoitg.decode.structs import DecodeLimits
from videoitg.preprocess import MEAN, STD, resize_frame


class _Frames:
    """Decoded frames in presentation order, restartable at a keyframe."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 deadline: Deadline, name: str) -> None:
        self.container, self.stream, self.deadline, self.name = container, stream, deadline, name
        self.decode_errors = 0
        self.started = False
        self.wanted: set[int] = set()  # pts still to deliver; other non-reference frames are skipped
        self.skip_nonref = True

    def start(self, seek_pts: int | None) -> Iterator[av.VideoFrame]:
        """Frames from the keyframe at `seek_pts` (None: from the beginning of the stream)."""
        try:
            if seek_pts is not None:
                # backward=True: land on the keyframe at or before seek_pts (the index says it is a keyframe).
                self.container.seek(seek_pts, stream=self.stream, backward=True, any_frame=False)
                self.stream.codec_context.flush_buffers()
            elif self.started:
                self.container.seek(0, backward=True, any_frame=False)  # AV_TIME_BASE units: the very start
                self.stream.codec_context.flush_buffers()
        except av.error.FFmpegError as e:
            raise TruncatedVideoError(f"{self.name}: cannot seek in the video ({e.strerror}); "
                                      "the file is corrupt") from None
        self.started = True
        return self._iter()

    def _iter(self) -> Iterator[av.VideoFrame]:
        cc = self.stream.codec_context
        try:
            with demux(self.container, self.stream) as packets:
                for packet in packets:
                    self.deadline.check("decoding")
                    if self.skip_nonref:
                        # A frame nothing references and nobody sampled need not be decoded at all (B-frames of
                        # typical H.264/HEVC encodes): FFmpeg drops it before any pixel work.
                        cc.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in self.wanted else "NONREF"
                    try:
                        for frame in cc.decode(packet if packet.size else None):
                            self.deadline.spend(frame.width * frame.height)
                            yield frame
                    except av.error.DecoderNotFoundError:
                        raise
                    except av.error.FFmpegError:  # InvalidData, EPERM, EINVAL...: a damaged packet
                        self.decode_errors += 1  # a damaged packet: its frame is reported missing if sampled
        except av.error.DecoderNotFoundError as e:
            raise UnsupportedCodecError(f"{self.name}: no decoder for codec {cc.name} "
                                        f"({e.strerror})") from None
        except (av.error.FFmpegError, IndexError):  # EOF, EIO, EAGAIN... from the demuxer: the end of what can be
            # read (IndexError: PyAV's demux meeting a packet of a stream the damaged container never declared)
            return


def decode_sampled(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                   index: FrameIndex, frame_numbers: list[int], image_size: int, limits: DecodeLimits,
                   deadline: Deadline, name: str, threads: int = 0, skip_nonref: bool = True,
                   out: np.ndarray | None = None,
                   on_frame: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """Decode `frame_numbers` (sorted, indices into `index.pts`). Returns ([T,3,S,S], rotation).

    out: where the frames go ([T,3,S,S] float32: SigLIP pixel values; uint8: the resized RGB frames, to be
    normalised later by `videoitg.preprocess.pixel_values`); None allocates float32.
    on_frame(done, rotation): called whenever the first `done` frames of `out` are final (a consumer may start
    on them while the rest decode)."""
    if out is None:
        out = np.empty((len(frame_numbers), 3, image_size, image_size), dtype=np.float32)
    if out.shape != (len(frame_numbers), 3, image_size, image_size) or out.dtype not in (np.float32, np.uint8):
        raise ValueError(f"out must be [{len(frame_numbers)}, 3, {image_size}, {image_size}] float32 or uint8, "
                         f"got {list(out.shape)} {out.dtype}")
    write = normalize_into if out.dtype == np.float32 else _chw_into  # frames are written in place, one at a time

    def put(first: int, end: int, frame: av.VideoFrame) -> None:
        write(out[first], resize_frame(frame.to_ndarray(format="rgb24"), image_size))
        for j in range(first + 1, end):  # duplicate timestamps map to one frame
            out[j] = out[first]

    rotation = decode_each(container, stream, index, frame_numbers, limits, deadline, name, put, threads=threads,
                           skip_nonref=skip_nonref, on_frame=on_frame)
    return out, rotation


def decode_each(container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                index: FrameIndex, frame_numbers: list[int], limits: DecodeLimits, deadline: Deadline, name: str,
                put: Callable[[int, int, av.VideoFrame], None], threads: int = 0, skip_nonref: bool = True,
                on_frame: Callable[[int, int], None] | None = None) -> int:
    """The sampled decoding itself: decode `frame_numbers` (sorted, indices into `index.pts`) and hand each to
    `put(first, end, frame)`, the decoded frame (as stored, before rotation) for positions first..end-1 of
    `frame_numbers` (several when timestamps repeat), in order. Returns the display rotation.
    on_frame(done, rotation): called after each `put` with the positions now final."""
    if not stream.codec_context.is_open:  # frame + slice threads; only settable before the codec opens
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = threads
    targets = [index.pts[i] for i in frame_numbers]
    frames = _Frames(container, stream, deadline, name)
    frames.wanted = set(targets)
    frames.skip_nonref = not index.ordinal and skip_nonref
    rotation = None
    checked_size: tuple[int, int] | None = None
    missing: list[int] = []
    retried: set[int] = set()
    it: Iterator[av.VideoFrame] | None = None
    last: int | None = None  # pts of the last frame the decoder produced
    sought: int | None = None  # keyframe of the last forward seek: seeking there again cannot get further
    ordinal_count = -1
    i = 0
    while i < len(targets):
        t = targets[i]
        key = index.keyframe_at_or_before(t) if not index.ordinal else index.pts[0]
        if it is None:
            it = frames.start(None if key == index.pts[0] else key)
            last = None
        elif not index.ordinal and last is not None and key is not None and key > last and key != sought:
            it, last, sought = frames.start(key), None, key  # the sampled frame's GOP starts ahead: skip the gap
        frame = next(it, None)
        if frame is None:  # end of stream with targets left
            if t not in retried:
                retried.add(t)
                it = frames.start(_earlier_key(index, key))
                last, ordinal_count = None, -1
                continue
            missing.extend(range(i, len(targets)))
            break
        if index.ordinal:
            ordinal_count += 1
            p = ordinal_count
        else:
            p = frame.pts if frame.pts is not None else frame.dts
            if p is None:
                continue
        last = p
        if t < p:  # passed the target without seeing it (imprecise seek or a damaged frame): retry once
            if t not in retried and not index.ordinal:
                retried.add(t)
                it, last = frames.start(_earlier_key(index, key)), None
                continue
            missing.append(i)
            i += 1
            continue
        if p != t:
            continue
        if checked_size != (frame.width, frame.height):
            check_frame_size(frame.width, frame.height, limits, name)  # the header may have lied
            checked_size = (frame.width, frame.height)
        if rotation is None:
            rotation = frame_rotation(frame)
        # Duplicate timestamps map to one frame: every target with this pts gets it.
        end = i + 1
        while end < len(targets) and targets[end] == t:
            end += 1
        put(i, end, frame)
        frames.wanted.discard(t)
        i = end
        if on_frame is not None:
            on_frame(i, rotation or 0)
    if missing:
        first = frame_numbers[missing[0]]
        raise TruncatedVideoError(
            f"{name}: {len(missing)} of {len(targets)} sampled frames could not be decoded "
            f"(first: frame {first} of {index.total}; {frames.decode_errors} damaged packets); "
            "the file is truncated or corrupt")
    return rotation or 0


_SCALE, _MEAN, _STD = np.float32(255.0), np.float32(MEAN), np.float32(STD)


def normalize_into(dst: np.ndarray, rgb: np.ndarray) -> None:
    """[S,S,3] uint8 -> dst [3,S,S] float32, the same float32 operations as `videoitg.preprocess.normalize`
    ((x / 255 - mean) / std), done in numpy: per frame, torch's op dispatch and threads cost more than the math."""
    np.divide(rgb.transpose(2, 0, 1), _SCALE, out=dst, dtype=np.float32)
    np.subtract(dst, _MEAN, out=dst)
    np.divide(dst, _STD, out=dst)


def _chw_into(dst: np.ndarray, rgb: np.ndarray) -> None:
    """[S,S,3] uint8 -> dst [3,S,S] uint8 (normalisation happens later, where the model runs)."""
    np.copyto(dst, rgb.transpose(2, 0, 1))


def _earlier_key(index: FrameIndex, key: int | None) -> int | None:
    """The keyframe before `key` (None = the start of the stream)."""
    if key is None or index.ordinal:
        return None
    prev = index.keyframe_at_or_before(key - 1)
    return None if prev is None or prev == index.pts[0] else prev


def frame_rotation(frame: av.VideoFrame) -> int:
    """Degrees counter-clockwise the frame must turn to display upright (0/90/180/270), from its display matrix."""
    try:
        deg = frame.rotation
    except (AttributeError, ValueError):
        return 0
    return int(round(float(deg) / 90.0)) * 90 % 360 if deg else 0


def apply_rotation(pixel_values: Any, rotation: int) -> Any:
    """Turn frames [..., H, W] upright (a numpy array, or DALI's torch tensor). Squashing to S x S commutes with
    quarter turns, so rotating after the resize gives the frames a player would show, then squashed, at a fraction
    of the cost."""
    k = (rotation // 90) % 4
    if k == 0:
        return pixel_values
    if isinstance(pixel_values, np.ndarray):
        return np.ascontiguousarray(np.rot90(pixel_values, k, axes=(-2, -1)))
    return pixel_values.rot90(k, dims=(-2, -1)).contiguous()


