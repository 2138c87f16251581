"""The pieces of one request's decode: the sampled frames cut at the places a decoder can start, so that the pieces
decode on several decoders at once (`videoitg.decode.pool`) and every sampled frame is decoded once.

A span is the sampled frames that share a start: the last keyframe at or before them that is not an open GOP's
(`FrameIndex.start_at_or_before`: an open GOP's leading frames reference the GOP before, so a decoder starting at
its keyframe would not give them). A span decodes the frames from its start to its last sampled frame; spans do not
overlap, since the next span starts at a keyframe after this span's last frame. A piece is one or more consecutive
spans, at most `max_frames` sampled frames (a decoder that holds a run's frames at full size, DALI, bounds its
working set by it); a span with more sampled frames than that is the one place a piece starts again where another
started (at the same keyframe), and the plan counts what that costs.

DALI's video decoder (2.4, its CPU and NVDEC backends alike) and PyNvVideoCodec's demuxer decode from the first
packet of the bytes they are given, so `cut` copies (does not decode) a piece's packets into a Matroska stream of
their own: for each span, the packets from its start until every frame shown from there to its last sampled frame
is in. A decoder numbers the piece's frames in presentation order: frame f of the video is the piece's frame
`rank of its timestamp among the copied packets'` (a span's copy may end with a frame shown after its last sampled
one, a B-frame's reference). Streams without timestamps are not cut: the piece is the whole video.
"""

from __future__ import annotations

import io
from bisect import bisect_left
from dataclasses import dataclass

import av
import av.error

from videoitg.decode.container import FrameIndex, demux, select_video_stream


@dataclass(frozen=True)
class Span:
    """Sampled frames (positions `first`..`end` - 1 in the request's frame numbers) decoded from the frame at
    position `start` of the video (presentation order)."""

    start: int
    first: int
    end: int

    def decoded(self, frame_numbers: list[int]) -> int:
        """Frames a decoder runs through for this span: from its start to its last sampled frame."""
        return frame_numbers[self.end - 1] - self.start + 1


@dataclass(frozen=True)
class PiecePlan:
    """Consecutive spans one decoder decodes in one run; `number` counts the request's pieces from 0."""

    number: int
    spans: tuple[Span, ...]

    @property
    def first(self) -> int:
        return self.spans[0].first

    @property
    def end(self) -> int:
        return self.spans[-1].end

    def decoded(self, frame_numbers: list[int]) -> int:
        """Frames the piece runs through: its spans'."""
        return sum(s.decoded(frame_numbers) for s in self.spans)

    def describe(self, frame_numbers: list[int], pieces: int) -> str:
        """What a failure names: "piece 3 of 9 (sampled frames 120-180 of the video, decoded from frame 100)"."""
        return (f"piece {self.number + 1} of {pieces} (sampled frames {frame_numbers[self.first]}-"
                f"{frame_numbers[self.end - 1]}, decoded from frame {self.spans[0].start})")


@dataclass(frozen=True)
class Piece:
    """The bytes a decoder is fed for a piece, and the piece's frame number (presentation order) of each of its
    sampled frames, in the request's order."""

    data: bytes  # a Matroska stream of the piece's packets, or the whole video
    frames: list[int]
    count: int  # frames the piece holds (its decoder gives this many); 0 where unknown (the whole video)


def plan_spans(index: FrameIndex, frame_numbers: list[int]) -> list[Span]:
    """The request's sampled frames (ascending) grouped by the start a decoder decodes them from."""
    spans: list[Span] = []
    for j, n in enumerate(frame_numbers):
        start = index.start_at_or_before(n)
        if spans and spans[-1].start == start:
            spans[-1] = Span(start, spans[-1].first, j + 1)
        else:
            spans.append(Span(start, j, j + 1))
    return spans


def plan_pieces(index: FrameIndex, frame_numbers: list[int], max_frames: int, pieces: int) -> list[PiecePlan]:
    """The request's pieces: about `pieces` of them, of about equal decode cost (frames run through), each at most
    `max_frames` sampled frames, cut only between spans (and inside a span of more than `max_frames`)."""
    if not frame_numbers:
        return []
    max_frames = max(1, max_frames)
    spans: list[Span] = []
    for s in plan_spans(index, frame_numbers):  # a span over the bound: parts that each decode from its start
        spans += [Span(s.start, a, min(a + max_frames, s.end)) for a in range(s.first, s.end, max_frames)]
    target = sum(s.decoded(frame_numbers) for s in spans) / max(1, pieces)
    out: list[list[Span]] = [[]]
    done = 0  # decode cost of the spans placed so far
    for s in spans:
        current = out[-1]
        frames = current[-1].end - current[0].first if current else 0
        if current and (frames + s.end - s.first > max_frames or (done >= target * len(out) and len(out) < pieces)):
            out.append([])
        out[-1].append(s)
        done += s.decoded(frame_numbers)
    return [PiecePlan(k, tuple(p)) for k, p in enumerate(out)]


def minimum_decode(index: FrameIndex, frame_numbers: list[int]) -> int:
    """Frames any decoder that starts only where it can must run through for these sampled frames: each span from
    its start to its last sampled frame."""
    return sum(s.decoded(frame_numbers) for s in plan_spans(index, frame_numbers))


def cut(data: bytes, index: FrameIndex, plan: PiecePlan, frame_numbers: list[int]) -> Piece:
    """The bytes that decode `plan`'s sampled frames, and their frame numbers in those bytes (module docstring).
    The whole video, with the video's own frame numbers, where the packets carry no timestamps or do not match
    the index (a damaged file: the decoder then meets the damage as it would in the whole video)."""
    wanted = frame_numbers[plan.first:plan.end]
    whole = Piece(data, list(wanted), 0)
    if index.ordinal:
        return whole
    copied: list[int] = []  # timestamps of the packets copied: the piece's frames
    out = io.BytesIO()
    try:
        with av.open(io.BytesIO(data), metadata_errors="ignore") as src:
            stream = select_video_stream(src, "the video")
            with av.open(out, "w", format="matroska") as dst:
                copy = dst.add_stream_from_template(stream)
                for span in plan.spans:
                    if not _copy_span(src, stream, dst, copy, index, span.start, frame_numbers[span.end - 1],
                                      copied):
                        return whole
    except (av.error.FFmpegError, ValueError):  # a stream that cannot be cut or copied: decode it whole
        return whole
    copied.sort()
    return Piece(out.getvalue(), [bisect_left(copied, index.pts[n]) for n in wanted], len(copied))


def _copy_span(src: av.container.InputContainer, stream: av.video.stream.VideoStream,
               dst: av.container.OutputContainer, copy: av.video.stream.VideoStream, index: FrameIndex, start: int,
               last: int, copied: list[int]) -> bool:
    """Copy the packets that decode frames `start`..`last` (positions, presentation order) from the frame at
    `start`, a keyframe or the stream's first frame; their timestamps go to `copied`. False where the packets are
    not what the index says."""
    key, last_pts = index.pts[start], index.pts[last]
    wanted, found = last - start + 1, 0
    if start == 0:
        src.seek(0, backward=True, any_frame=False)  # AV_TIME_BASE units: the very start
    else:
        src.seek(key, stream=stream, backward=True, any_frame=False)
    with demux(src, stream) as packets:
        for packet in packets:
            if packet.size == 0 or packet.is_discard:  # as `build_index` counts frames
                continue
            t = packet.pts if packet.pts is not None else packet.dts
            if t is None:
                return False
            if start > 0 and not found:
                if t != key or not packet.is_keyframe:
                    if t > key:  # the seek went past the keyframe
                        return False
                    continue  # before the keyframe: the seek landed on an earlier one
            if t < key:  # shown before the start: an open GOP's leading frame the index did not show
                return False
            packet.stream = copy
            dst.mux(packet)
            copied.append(t)
            found += t <= last_pts
            if found == wanted:
                return True
    return False  # the stream ended before every frame was copied: the index and the bytes differ
