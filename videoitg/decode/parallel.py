"""Keyframe-parallel sampled decoding (GOPs decode on their own: worker threads take contiguous pieces of equal
decode cost, each into its slice of one output, the serial decoder's frames bit for bit), and the `FrameStream` a
consumer reads the finished leading frames from while later ones decode."""

from __future__ import annotations

import os
import queue
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from videoitg.decode import threads as kept
from videoitg.decode.budget import Deadline
from videoitg.decode.container import FrameIndex, OpenedSource, open_container, select_video_stream
from videoitg.decode.pyav import apply_rotation, decode_sampled
from videoitg.decode.structs import DecodeLimits

if TYPE_CHECKING:
    import av

    from videoitg.decode.structs import SampledFrames

PIECES_PER_WORKER = 4  # more pieces than workers: a worker that finishes early takes the next piece


class StreamCancelledError(RuntimeError):
    """Raised inside a decode whose `FrameStream` consumer has stopped reading."""


def machine_workers() -> int:
    """Decoder threads this process may run at once: the cores it is allowed to use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def gop_groups(index: FrameIndex, frame_numbers: list[int]) -> list[tuple[int, int, int]]:
    """Consecutive sampled frames that share a keyframe: (first, end) positions in `frame_numbers` and the
    decode cost (frames from the keyframe to the group's last sampled frame)."""
    groups: list[tuple[int, int, int]] = []
    key_pos = last_key = None
    for j, n in enumerate(frame_numbers):
        key = index.keyframe_at_or_before(index.pts[n])
        if groups and key == last_key:
            a, _, _ = groups[-1]
            groups[-1] = (a, j + 1, n - key_pos + 1)
            continue
        last_key = key
        key_pos = 0 if key is None else bisect_left(index.pts, key)
        groups.append((j, j + 1, n - key_pos + 1))
    return groups


def plan_pieces(index: FrameIndex, frame_numbers: list[int], pieces: int) -> list[tuple[int, int]]:
    """Cut `frame_numbers` at GOP boundaries into at most `pieces` contiguous (start, end) ranges of about
    equal decode cost."""
    groups = gop_groups(index, frame_numbers)
    total = sum(c for _, _, c in groups)
    target = total / max(1, pieces)
    out: list[tuple[int, int]] = []
    start, acc = 0, 0.0
    for _, end, cost in groups:
        acc += cost
        if acc >= target * (len(out) + 1) and len(out) < pieces - 1:
            out.append((start, end))
            start = end
    if start < len(frame_numbers):
        out.append((start, len(frame_numbers)))
    return out


def decode_frames(src: OpenedSource, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                  index: FrameIndex, frame_numbers: list[int],
                  out: np.ndarray, limits: DecodeLimits, deadline: Deadline, name: str, workers: int,
                  on_frame: Callable[[int, int], None] | None = None) -> int:
    """Decode `frame_numbers` into `out` with up to `workers` threads. Returns the display rotation.

    `container`/`stream` are the caller's open ones (used by the first worker); the others open their own.
    Streams without timestamps decode sequentially, as does a request whose frames lie in one GOP."""
    size = out.shape[-1]
    pieces = plan_pieces(index, frame_numbers, workers * PIECES_PER_WORKER) if workers > 1 and not index.ordinal \
        else [(0, len(frame_numbers))]
    workers = min(workers, len(pieces))
    if workers <= 1:
        _, rotation = decode_sampled(container, stream, index, frame_numbers, size, limits, deadline, name,
                                     out=out, on_frame=on_frame)
        return rotation
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for k in range(len(pieces)):
        todo.put(k)
    done = [False] * len(pieces)
    errors: dict[int, BaseException] = {}
    rotations: dict[int, int] = {}
    lock = threading.Lock()
    threads = max(1, machine_workers() // workers)  # FFmpeg threads per decoder

    def report(k: int, rotation: int) -> None:
        with lock:
            done[k] = True
            rotations[k] = rotation
            if on_frame is not None and done[0]:
                first_open = next((j for j, d in enumerate(done) if not d), len(done))
                end = pieces[first_open][0] if first_open < len(pieces) else len(frame_numbers)
                on_frame(end, rotations[0])

    def run(own: tuple | None) -> None:
        opened, k = None, -1
        try:
            while not errors:
                try:
                    k = todo.get_nowait()
                except queue.Empty:
                    return
                if own is not None:
                    c, s = own
                else:
                    if opened is None:
                        opened = open_container(src)
                    c, s = opened, select_video_stream(opened, name)
                a, b = pieces[k]
                _, rotation = decode_sampled(c, s, index, frame_numbers[a:b], size, limits, deadline, name,
                                             threads=threads, out=out[a:b])
                report(k, rotation)
        except BaseException as e:  # handed to the caller below
            with lock:
                errors[k] = e
        finally:
            if opened is not None:
                opened.close()

    helpers = [kept.start(lambda: run(None), f"videoitg-decode-{w}") for w in range(1, workers)]
    run((container, stream))
    for t in helpers:
        t.wait()
    if errors:
        raise errors[min(errors)]  # the earliest piece's error: what the serial decoder would have met first
    return rotations[0]


class FrameStream:
    """The frames of one request as they are decoded: `chunks()` yields finished leading frames (uint8 or float,
    turned upright: numpy arrays, or a decode pool's tensors on its device) while the rest decode; `result()` is the
    `SampledFrames` once the decode is over.

    Filled by `videoitg.decode.stream_video` (a background thread); read by one consumer."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._out: np.ndarray | None = None
        self._done = 0
        self._rotation = 0
        self._result: SampledFrames | None = None
        self._error: BaseException | None = None
        self._over = False
        self._cancelled = False

    # ---- producer side ----
    def begin(self, out: Any) -> None:
        """The buffer the frames are decoded into (a numpy array, or a device's tensor); a decode started again
        (another decoder after a failure) begins a new one, from its first frame."""
        with self._cond:
            self._out, self._done = out, 0
            self._cond.notify_all()

    def advance(self, done: int, rotation: int) -> None:
        with self._cond:
            if self._cancelled:  # the consumer is gone: stop decoding for it
                raise StreamCancelledError("the consumer of this frame stream stopped reading")
            self._done, self._rotation = max(self._done, done), rotation
            self._cond.notify_all()

    def finish(self, result: SampledFrames | None, error: BaseException | None = None) -> None:
        with self._cond:
            self._result, self._error, self._over = result, error, True
            self._cond.notify_all()

    # ---- consumer side ----
    def __bool__(self) -> bool:  # not len(): a stream is a stream even before it knows its length
        return True

    def __len__(self) -> int:
        """Number of sampled frames (waits until the video is indexed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._out is not None or self._over)
            self._raise()
            return len(self._result) if self._out is None else int(self._out.shape[0])

    def chunks(self, size: int) -> Iterator[Any]:
        """Consecutive [<=size, 3, S, S] slices in order, each as soon as it is decoded. Leaving the loop early
        (an error in the consumer) cancels the rest of the decode."""
        t = len(self)
        finished = False
        try:
            for a in range(0, t, size):
                b = min(a + size, t)
                with self._cond:
                    self._cond.wait_for(lambda b=b: self._done >= b or self._over)
                    self._raise()
                    if self._out is not None:  # PyAV's buffer, decoding or over: its frames, turned upright
                        chunk = apply_rotation(self._out[a:b], self._rotation)
                    else:  # over, and nothing streamed (a float32 decode of a pool): the result's frames
                        chunk = self._result.pixel_values[a:b]
                yield chunk
            finished = True
        finally:
            if not finished:
                self.cancel()

    def cancel(self) -> None:
        """Stop the decode at its next finished frame (its `result()` then raises `StreamCancelledError`)."""
        with self._cond:
            self._cancelled = True

    def result(self) -> SampledFrames:
        with self._cond:
            self._cond.wait_for(lambda: self._over)
            self._raise()
            return self._result

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error
