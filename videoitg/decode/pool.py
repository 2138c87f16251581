"""A process-wide pool of decoder sessions that every request of the process shares: each request's sampled frames
are cut into pieces (`videoitg.decode.pieces`) and the pieces decode on the pool's sessions at once, so one request
uses every decode engine of the card and concurrent requests share them instead of each opening its own.

- Sessions: the decoder a caller asked for (NVDEC through DALI pipelines or PyNvVideoCodec, DALI's CPU decoder,
  PyAV), `nvdec_sessions` of them on a GPU (the card's decode engines), and optionally overflow sessions (PyAV
  threads on the CPU cores) that take a piece only while every primary session is busy, so a burst is served by
  both. Each session is a thread with its own decoder state (a DALI pipeline, an NVDEC session, a CUDA stream).
- Fairness: a free session takes the next piece of the next request in turn (round-robin by request), so a second
  request's first pieces start while the first request's decode is under way instead of after it.
- Failure: a piece that fails stops its request: no further piece of it starts, pieces already running finish, and
  the request's error names the piece (`PiecePlan.describe`) and keeps the decode error's type.
- Progress: each request hears the number of its leading frames that are final (every piece before them done), so
  a consumer (`FrameStream`) reads them while the rest decode.
"""

from __future__ import annotations

import collections
import io
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from videoitg.decode.errors import DecodeTimeoutError
from videoitg.decode.pieces import PiecePlan, plan_pieces
from videoitg.decode.sessions import Job, Session, Video, Work
from videoitg.errors import VideoDecodeError

__all__ = ["DecodePool", "Job", "PyAVSession", "Session", "Video", "Work", "nvdec_sessions", "shared_pool"]

log = logging.getLogger(__name__)

PIECES_PER_SESSION = 3  # a request is cut into about this many pieces per session (per piece a batched session
# takes at once): the sessions even out
# NVDEC sessions where NVML does not say how many decode engines the card has: two, the fewest of
# NVIDIA's data-centre cards that decode video (T4, A10), so a card with more is under-used, never oversubscribed.
DEFAULT_NVDEC_SESSIONS = 2
# CPU cores left to the rest of the process (the vision and grounding steps' launches, the NVDEC sessions' feeding)
# when PyAV overflow threads are sized to the machine.
RESERVED_CORES = 2
_CORE_SHARE = 1  # decode processes on the machine that divide its spare cores (`share_cores`)


class DecodePool:
    """Sessions shared by every request of the process (module docstring). Threads start with the first request
    and run until `close`."""

    def __init__(self, sessions: list[Session]) -> None:
        if not sessions or all(s.overflow for s in sessions):
            raise ValueError("a decode pool needs at least one session that is not an overflow one")
        self.sessions = sessions
        self._cond = threading.Condition()
        self._jobs: collections.deque[Job] = collections.deque()  # requests with pieces not started, in turn
        self._idle_primary = sum(not s.overflow for s in sessions)
        self._threads: list[threading.Thread] = []
        self._closed = False

    def max_frames(self, video: Video) -> int:
        return min(s.max_frames(video) for s in self.sessions)

    def plan(self, video: Video) -> list[PiecePlan]:
        """The request's pieces for this pool (`pieces.plan_pieces`)."""
        return plan_pieces(video.index, video.frame_numbers, self.max_frames(video),
                           PIECES_PER_SESSION * sum(s.batch for s in self.sessions))

    def decode(self, video: Video, out: Any, progress: Callable[[int], None] | None = None,
               pieces: list[PiecePlan] | None = None) -> Job:
        """Decode the request's sampled frames into `out` ([T, 3, S, S] uint8) and return its finished `Job`, or
        raise the error of its first failing piece. `progress(done)`: told each time more leading frames are
        final (it may raise to cancel the request: the error is the call's)."""
        job = Job(video, pieces if pieces is not None else self.plan(video), out, progress)
        if not job.pieces:
            return job
        with self._cond:
            if self._closed:
                raise VideoDecodeError(f"{video.name}: the decode pool is closed")
            self._start()
            self._jobs.append(job)
            self._cond.notify_all()
            while not job.over:
                self._cond.wait(timeout=0.5)
                if not job.over and video.deadline.t_end < time.monotonic() and job.error is None:
                    self._fail(job, DecodeTimeoutError(f"{video.name}: video decode exceeded its time budget of "
                                                       f"{video.deadline.budget_s:g} s (while decoding pieces)"))
        if job.error is not None:
            raise job.error
        return job

    def close(self) -> None:
        """Stop the threads once their current pieces are done (pending requests fail)."""
        with self._cond:
            self._closed = True
            for job in list(self._jobs):
                self._fail(job, VideoDecodeError(f"{job.video.name}: the decode pool is closing"))
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=60)

    # ---- the sessions' threads ----
    def _start(self) -> None:
        if self._threads:
            return
        for k, s in enumerate(self.sessions):
            t = threading.Thread(target=self._serve, args=(s,), name=f"videoitg-decode-pool-{k}", daemon=True)
            t.start()
            self._threads.append(t)

    def _take(self, session: Session) -> list[Work]:
        """Under the lock: the next pieces for `session`, one request after another in turn; none for an overflow
        session while a primary one is idle."""
        if session.overflow and self._idle_primary > 0:
            return []
        work: list[Work] = []
        size = None
        for _ in range(len(self._jobs) * max(1, session.batch)):
            if len(work) >= session.batch or not self._jobs:
                break
            job = self._jobs[0]
            self._jobs.rotate(-1)  # the next request's turn
            if size is not None and job.video.image_size != size:  # one batch, one output size
                continue
            size = job.video.image_size
            work.append(Work(job, job.pending.popleft()))
            job.running += 1
            if not job.pending:
                self._jobs.remove(job)
        return work

    def _serve(self, session: Session) -> None:
        try:
            while True:
                with self._cond:
                    while not (work := self._take(session)):
                        if self._closed:
                            return
                        self._cond.wait()
                    if not session.overflow:
                        self._idle_primary -= 1
                        if not self._idle_primary:
                            self._cond.notify_all()  # every NVDEC session busy: the overflow threads may take pieces
                error: BaseException | None = None
                try:
                    for w in work:
                        w.job.video.deadline.check(f"decoding {w.job.describe(w.plan)}")
                    session.run(work)
                except BaseException as e:  # the pieces' request fails with it, named (below)
                    error = e
                with self._cond:
                    if not session.overflow:
                        self._idle_primary += 1
                    for w in work:
                        w.job.running -= 1
                        if error is not None:
                            self._fail(w.job, _named(error, w.job, w.plan, session, len(work)))
                        else:
                            w.job.done[w.plan.number] = True
                            w.job.by_session[session.name] += 1
                            w.job.decoded_by[w.plan.number] = session.name
                            w.job.decoded_frames += w.plan.decoded(w.job.video.frame_numbers)
                    self._cond.notify_all()
                if error is None:
                    for w in work:
                        self._report(w.job)
        finally:
            session.close()

    def _fail(self, job: Job, error: BaseException) -> None:
        """Under the lock: the request's first error; none of its other pieces starts."""
        if job.error is None:
            job.error = error
            if isinstance(error, DecodeTimeoutError):
                job.video.deadline.cancel()  # the request's other work stops at its next check too
        job.pending.clear()
        if job in self._jobs:
            self._jobs.remove(job)
        self._cond.notify_all()

    def _report(self, job: Job) -> None:
        """Tell the request how many of its leading frames are final (in order, one thread at a time)."""
        if job.progress is None:
            return
        with job._report:
            k = job.reported
            while k < len(job.pieces) and job.done[k]:
                k += 1
            if k == job.reported or job.error is not None:
                return
            job.reported = k
            try:
                job.progress(job.pieces[k - 1].end)
            except BaseException as e:  # the consumer is gone: stop the request
                with self._cond:
                    self._fail(job, e)


def _named(error: BaseException, job: Job, plan: PiecePlan, session: Session, batch: int) -> BaseException:
    """The error a failing piece gives its request: the decode error's own type where it has one (a timeout, a
    truncated file), its message naming the video, the piece and the session."""
    where = f"{job.video.name}: {job.describe(plan)} on {session.name}"
    where += f" (a batch of {batch} pieces)" if batch > 1 else ""
    if isinstance(error, VideoDecodeError):
        text = str(error)
        text = text[len(job.video.name) + 2:] if text.startswith(f"{job.video.name}: ") else text
        try:
            return type(error)(f"{where}: {text}")
        except TypeError:  # a subclass with another signature
            return VideoDecodeError(f"{where}: {text}")
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return error
    return VideoDecodeError(f"{where}: {type(error).__name__}: {error}"[:600])


# ---- PyAV sessions ---------------------------------------------------------------------------------------------
class PyAVSession(Session):
    """PyAV (FFmpeg) on one CPU core: seeks to each piece's keyframes in the whole video and decodes the piece's
    sampled frames as `decode_video` does (the same frames, bit for bit). As an overflow session, its frames are
    PyAV's where the primary decoder's would have been within that decoder's bound."""

    def __init__(self, number: int, overflow: bool = False) -> None:
        self.name = f"pyav:{number}"
        self.overflow = overflow

    def run(self, work: list[Work]) -> None:
        import av

        from videoitg.decode.container import select_video_stream
        from videoitg.decode.pyav import decode_sampled

        for w in work:
            v = w.job.video
            numbers = v.frame_numbers[w.plan.first:w.plan.end]
            rows = np.empty((len(numbers), 3, v.image_size, v.image_size), np.uint8)
            with av.open(io.BytesIO(v.data), metadata_errors="ignore") as c:
                decode_sampled(c, select_video_stream(c, v.name), v.index, numbers, v.image_size, v.limits,
                               v.deadline, v.name, threads=1, out=rows)
            w.job.put(w.plan, rows)


def share_cores(processes: int) -> None:
    """This process is one of `processes` decode processes on the machine (a decode step's instances, each a process
    with a pool of its own): its pool's PyAV overflow threads take its share of the spare cores, not all of them.
    Called before the pool is made (the decode step's `initialize`)."""
    global _CORE_SHARE
    _CORE_SHARE = max(1, processes)


def cpu_overflow_sessions(cores: int | None = None, share: int | None = None) -> list[Session]:
    """PyAV overflow sessions for the CPU cores this process may use, less RESERVED_CORES, divided among the
    `share` decode processes of the machine (default: `share_cores`'s), rounded up: no spare core left idle."""
    from videoitg.decode.parallel import machine_workers

    spare = max(0, (cores if cores is not None else machine_workers()) - RESERVED_CORES)
    return [PyAVSession(k, overflow=True) for k in range(-(-spare // (share or _CORE_SHARE)))]  # rounded up


# ---- how many NVDEC sessions, and the process's pools -------------------------------------------------------------
# NVDEC engines by card name, NVIDIA's datasheets (the video codec support matrix), the more specific name first: for
# a card NVML does not describe.
NVDEC_ENGINES = {"H100": 7, "H200": 7, "GH200": 7, "A100": 5, "A30": 4, "L40": 3, "L4": 4, "A10": 2, "T4": 2}


def nvdec_sessions(device_index: int = 0) -> tuple[int, str]:
    """The card's NVDEC engines and who said so: NVML (nvidia-ml-py: the decoders of the card's whole-GPU instance
    profile, on cards with instance profiles where NVML answers), else the card's name in NVDEC_ENGINES, else
    DEFAULT_NVDEC_SESSIONS."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = _nvml_handle(pynvml, device_index)
            info = pynvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, pynvml.NVML_GPU_INSTANCE_PROFILE_7_SLICE)
            if int(info.decoderCount) > 0:
                return int(info.decoderCount), "nvml"
        finally:
            pynvml.nvmlShutdown()
    except Exception as e:  # not installed, no NVML, a card without instance profiles or with MIG off
        log.debug("NVML gave no NVDEC count: %s", e)
    try:
        import torch

        name = torch.cuda.get_device_name(device_index)
    except Exception:  # no CUDA here
        name = ""
    engines = engines_by_name(name)
    if engines is not None:
        return engines, f"datasheet ({name})"
    return DEFAULT_NVDEC_SESSIONS, "default"


def engines_by_name(name: str) -> int | None:
    """NVDEC_ENGINES of a card named `name` ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB", "NVIDIA L40S")."""
    for word in re.split(r"[\s-]+", name):
        for card, n in NVDEC_ENGINES.items():
            if word in (card, f"{card}S"):
                return n
    return None


def _nvml_handle(pynvml: Any, device_index: int) -> Any:
    """NVML's handle of torch's CUDA device `device_index` (by its UUID: NVML and CUDA may number GPUs apart)."""
    import torch

    uuid = str(torch.cuda.get_device_properties(device_index).uuid)
    return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")


_POOLS: dict[tuple[str, str], DecodePool] = {}
_POOLS_LOCK = threading.Lock()


def shared_pool(decoder: str, device: str | None) -> DecodePool:
    """The process's pool for `decoder` ("dali-gpu", "nvc-gpu", "dali-cpu") on `device`, made on first use:
    NVDEC decoders get `nvdec_sessions` sessions and PyAV overflow threads on the spare cores; DALI's CPU decoder one
    pipeline (it is only run when asked for: PyAV is the faster CPU decoder)."""
    key = (decoder, str(device))
    with _POOLS_LOCK:
        if key not in _POOLS:
            _POOLS[key] = _make_pool(decoder, device)
        return _POOLS[key]


def _make_pool(decoder: str, device: str | None) -> DecodePool:
    import torch

    if decoder == "dali-cpu":
        from videoitg.decode.dali import DaliSession

        return DecodePool([DaliSession("cpu")])
    target = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
    index = target.index if target.index is not None else torch.cuda.current_device()
    n, source = nvdec_sessions(index)
    log.info("decode pool for %s on cuda:%d: %d NVDEC sessions (%s)", decoder, index, n, source)
    if decoder == "dali-gpu":
        from videoitg.decode.dali import DaliSession

        primary: list[Session] = [DaliSession("mixed", index, number=k) for k in range(n)]
    elif decoder == "nvc-gpu":
        from videoitg.decode.nvc import NvcSession

        primary = [NvcSession(index, number=k) for k in range(n)]
    else:
        raise ValueError(f"no pool for decoder {decoder!r}")
    return DecodePool(primary + cpu_overflow_sessions())


