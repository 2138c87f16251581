"""The chosen frames handed on as images: the frames a request picks from a result, decoded from the video at its own
size (or a given one), as JPEG files with an index, or as JPEG bytes for a request to a video-LLM
(`videoitg.answer.handoff`).

    from videoitg.decode.export import export_frames
    from videoitg.request.options import RequestOptions, select
    index = export_frames("clip.mp4", result, "frames/", select(result, RequestOptions(top_k=32)))

The pixels come from the project's decoder (`videoitg.decode.decode_full_frames`: the same PyAV decode, seeks and
checks as scoring, without the squash to the tower's square input), so an exported frame is the frame the number
names, upright.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from videoitg.errors import InputError
from videoitg.outputs import GroundingResult, record_video_path

if TYPE_CHECKING:
    from videoitg.decode.structs import DecodeLimits

INDEX = "index.json"
JPEG_QUALITY = 95


class FramesTooLargeError(InputError):
    """The frames asked for hold more bytes than allowed (a server's answer is bounded: docs/repository.md)."""


@dataclass(frozen=True)
class ExportedFrame:
    frame: int  # original frame number (the result's numbering)
    timestamp: float  # seconds from the first frame
    score: float  # sigmoid relevance
    rank: int  # 1 = the most relevant frame of the video under the result's ranking rule
    file: str  # name of the JPEG in the export folder
    width: int
    height: int


def resize_longer_side(image: np.ndarray, size: int | None) -> np.ndarray:
    """[H, W, 3] uint8 with its longer side scaled to `size` pixels, the aspect kept (PIL bicubic); None: as is."""
    if size is None:
        return image
    if size < 1:
        raise InputError(f"the export size must be >= 1 pixel, got {size}")
    h, w = image.shape[:2]
    scale = size / max(h, w)
    target = (max(1, round(w * scale)), max(1, round(h * scale)))
    if target == (w, h):
        return image
    return np.asarray(Image.fromarray(image).resize(target, Image.BICUBIC))


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """[H, W, 3] uint8 RGB -> JPEG file bytes (4:4:4 chroma at quality >= 90, so colour edges survive)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    return buf.getvalue()


def picked_images(video: str | Path | bytes, result: GroundingResult, positions: list[int],
                  size: int | None = None, *, jpeg: bool = False, max_bytes: int | None = None,
                  limits: DecodeLimits | None = None, time_budget_s: float | None = 60
                  ) -> list[tuple[int, np.ndarray | bytes]]:
    """(position, image) of the picked frames (`positions` into the result's per-frame lists, chronological: what
    `videoitg.request.options.select` gives), decoded at the video's size or with the longer side `size`: what
    `export_frames` writes and a server answers. `jpeg`, `max_bytes`, `limits` and `time_budget_s` as for
    `frame_images`."""
    if not positions:
        raise InputError("no frames picked")
    images = _images(video, [result.frame_indices[i] for i in positions], size, jpeg, max_bytes, limits,
                     time_budget_s, f"top-{len(positions)}")
    return list(zip(positions, images, strict=True))


def frame_images(video: str | Path | bytes, frame_numbers: list[int], size: int | None = None, *,
                 jpeg: bool = False, max_bytes: int | None = None, limits: DecodeLimits | None = None,
                 time_budget_s: float | None = 60) -> list[np.ndarray | bytes]:
    """The frames `frame_numbers` (original numbers, in the order given), decoded at the video's size or with the
    longer side `size`: the one path from frame numbers to the images a video-LLM is sent, whichever rule chose
    them. `jpeg`: each image as JPEG file bytes (`jpeg_bytes`, encoded as it is decoded), else RGB uint8
    [H, W, 3]. `max_bytes`: FramesTooLargeError as soon as the images so far hold more bytes. `limits` and
    `time_budget_s` bound the decode (`decode_full_frames`)."""
    return _images(video, frame_numbers, size, jpeg, max_bytes, limits, time_budget_s, str(len(frame_numbers)))


def _images(video: str | Path | bytes, frame_numbers: list[int], size: int | None, jpeg: bool, max_bytes: int | None,
            limits: DecodeLimits | None, time_budget_s: float | None, which: str) -> list[np.ndarray | bytes]:
    from videoitg.decode import decode_full_frames  # the decoder (and torch) load with the first frames asked for

    held = 0

    def transform(image: np.ndarray) -> np.ndarray | bytes:
        nonlocal held
        out = resize_longer_side(image, size)
        out = jpeg_bytes(out) if jpeg else out
        held += len(out) if jpeg else out.nbytes
        if max_bytes is not None and held > max_bytes:
            raise FramesTooLargeError(f"the {which} frames hold more than {max_bytes} bytes")
        return out

    return decode_full_frames(video, frame_numbers, transform=transform, limits=limits, time_budget_s=time_budget_s)


def export_frames(video: str | Path, result: GroundingResult, out_dir: str | Path, positions: list[int],
                  size: int | None = None) -> list[ExportedFrame]:
    """Write the picked frames of `result` (`positions`, chronological) to `out_dir` as `<frame number, 7
    digits>.jpg`, and
    `index.json` listing them in chronological order (frame number, timestamp, score, rank, file, size) with the
    video, instruction and ranking rule. `size`: the longer side in pixels (default: the video's own size).
    Returns the index entries."""
    return write_frames(video, result, out_dir, picked_images(video, result, positions, size, jpeg=True), size)


def write_frames(video: str | Path, result: GroundingResult, out_dir: str | Path, jpegs: list[tuple[int, bytes]],
                 size: int | None = None) -> list[ExportedFrame]:
    """`export_frames`' files from frames already encoded: (position, JPEG bytes) in chronological order, from
    `picked_images(..., jpeg=True)` or a server's FRAME_JPEGS."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = {p: r + 1 for r, p in enumerate(result.ranking)}
    scores = result.scores
    entries: list[ExportedFrame] = []
    for pos, data in jpegs:
        n = result.frame_indices[pos]
        name = f"{n:07d}.jpg"
        (out / name).write_bytes(data)
        width, height = Image.open(io.BytesIO(data)).size  # the header only
        entries.append(ExportedFrame(n, round(result.timestamps[pos], 3), round(scores[pos], 6), ranks[pos], name,
                                     width, height))
    index = {"video": record_video_path(video), "instruction": result.instruction,
             "ranking_rule": result.ranking_rule, "top_k": len(entries), "size": size,
             "frames": [asdict(e) for e in entries]}
    (out / INDEX).write_text(json.dumps(index, indent=1) + "\n")
    return entries
