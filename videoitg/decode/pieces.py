"""Pieces of a stream that decode on their own, for a decoder that cannot seek.

DALI's video decoder (2.4, its CPU and NVDEC backends alike) decodes from the first packet of the bytes it is given
up to the last frame asked for. Fed the whole file once per chunk of frame numbers, every chunk decodes the video
from its start again: on an H100, 27.5 s of NVDEC for one 512-frame request on a 10-minute 720p H.264 clip (nine
chunks). A piece is the packets from the keyframe at or before a chunk's first frame up to its last frame, copied
(not decoded) into a Matroska stream of their own: each chunk decodes its own span, one GOP of lead-in at most.

Frame f of the stream is frame f - `Piece.first` of the piece: the piece starts at a keyframe and holds every frame
shown from there up to the chunk's last frame, so their order is the stream's. A keyframe is cut at only where no
packet after it shows before it (an open GOP's leading frames reference the GOP before; they would decode to
something else, or not at all); elsewhere the piece is the whole stream.
"""

from __future__ import annotations

import io
from bisect import bisect_left
from dataclasses import dataclass

import av
import av.error

from videoitg.decode.container import FrameIndex, select_video_stream


@dataclass(frozen=True)
class Piece:
    data: bytes  # an encoded stream: the whole video, or a Matroska stream of the piece's packets
    first: int  # the video's frame number of the piece's frame 0


def piece(data: bytes, index: FrameIndex, first: int, last: int) -> Piece:
    """The bytes that decode the video's frames `first`..`last` (presentation order) from their keyframe: the whole
    video where that keyframe is its first frame, where its packets carry no timestamps, or where the cut would not
    be clean (module docstring)."""
    whole = Piece(data, 0)
    if index.ordinal:
        return whole
    key = index.keyframe_at_or_before(index.pts[first])
    start = bisect_left(index.pts, key) if key is not None else 0
    if start == 0:
        return whole
    wanted, last_pts = last - start + 1, index.pts[last]  # the frames shown from the keyframe to `last`
    out = io.BytesIO()
    try:
        with av.open(io.BytesIO(data), metadata_errors="ignore") as src:
            stream = select_video_stream(src, "the video")
            src.seek(key, stream=stream, backward=True, any_frame=False)
            with av.open(out, "w", format="matroska") as dst:
                copy = dst.add_stream_from_template(stream)
                found = 0
                for packet in src.demux(stream):
                    if packet.size == 0 or packet.is_discard:  # as `build_index` counts frames
                        continue
                    t = packet.pts if packet.pts is not None else packet.dts
                    if not found and (t != key or not packet.is_keyframe):
                        if t is None or t > key:  # the seek went past the keyframe
                            return whole
                        continue  # before the keyframe: the seek landed on an earlier one
                    if t is None or t < key:  # shown before the keyframe: an open GOP's leading frame
                        return whole
                    packet.stream = copy
                    dst.mux(packet)
                    found += t <= last_pts
                    if found == wanted:
                        break
                else:
                    return whole  # the stream ended before every frame was copied: the index and the bytes differ
    except (av.error.FFmpegError, ValueError):  # a stream that cannot be cut or copied: decode it whole
        return whole
    return Piece(out.getvalue(), start)
