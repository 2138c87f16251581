"""What a decode pool's sessions share (`videoitg.decode.pool`): a request's video (`Video`), its decode in the pool
(`Job`: its pieces, its output, what is done), a piece handed to a session (`Work`), and the session's interface
(`Session`), which the DALI, PyNvVideoCodec and PyAV sessions implement."""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from videoitg.decode.budget import Deadline
from videoitg.decode.colour import YuvSignal
from videoitg.decode.container import FrameIndex
from videoitg.decode.pieces import PiecePlan
from videoitg.decode.structs import DecodeLimits

if TYPE_CHECKING:
    import torch


@dataclass
class Video:
    """What every session needs to decode a piece of one request's video."""

    data: bytes
    index: FrameIndex
    frame_numbers: list[int]
    image_size: int
    size_wh: tuple[int, int]
    colour: YuvSignal
    deadline: Deadline
    name: str
    limits: DecodeLimits = field(default_factory=DecodeLimits)


class Session:
    """One decoder of the pool (a thread runs it): `run` decodes the pieces it is given into their requests'
    outputs (`Job.put`). `overflow`: a PyAV thread that takes a piece only while every other session is busy.
    `batch`: pieces taken at once (DALI's one pipeline fed a batch of pieces)."""

    name = "session"
    overflow = False
    batch = 1
    device: torch.device | None = None  # where its frames are (None: host memory)

    def max_frames(self, video: Video) -> int:
        """Sampled frames one piece may hold for this session (DALI holds a run's frames at full size)."""
        return len(video.frame_numbers)

    def run(self, work: list[Work]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free the session's decoder state (its thread is ending)."""


@dataclass
class Work:
    job: Job
    plan: PiecePlan


class Job:
    """One request's decode in the pool: its pieces, its output ([T, 3, S, S] uint8: a torch tensor where any
    session's frames are on a device, else a numpy array), what is done and who decoded what."""

    def __init__(self, video: Video, pieces: list[PiecePlan], out: Any,
                 progress: Callable[[int], None] | None = None) -> None:
        self.video, self.pieces, self.out, self.progress = video, pieces, out, progress
        self.pending: collections.deque[PiecePlan] = collections.deque(pieces)
        self.running = 0
        self.done = [False] * len(pieces)
        self.reported = 0  # leading pieces reported to `progress`
        self.error: BaseException | None = None
        self.by_session: dict[str, int] = collections.Counter()
        self.decoded_by: dict[int, str] = {}  # piece number -> the session that decoded it
        self.decoded_frames = 0
        self._report = threading.Lock()

    @property
    def over(self) -> bool:
        return self.running == 0 and (self.error is not None or all(self.done))

    def put(self, plan: PiecePlan, rows: Any, stream: Any = None) -> None:
        """A piece's frames (`rows`: [piece frames, 3, S, S] uint8, numpy or torch on any device) into the output;
        on a CUDA device the copy runs on `stream` and is finished before this returns."""
        dst = self.out[plan.first:plan.end]
        if isinstance(self.out, np.ndarray):
            np.copyto(dst, rows if isinstance(rows, np.ndarray) else rows.cpu().numpy())
            return
        import torch

        src = torch.from_numpy(rows) if isinstance(rows, np.ndarray) else rows
        if dst.device.type != "cuda":
            dst.copy_(src)
            return
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            dst.copy_(src, non_blocking=src.device.type == "cuda")
        (stream or torch.cuda.current_stream(dst.device)).synchronize()

    def describe(self, plan: PiecePlan) -> str:
        return plan.describe(self.video.frame_numbers, len(self.pieces))
