"""The decode pool (`videoitg.decode.pool`), run here with PyAV and DALI's CPU decoder as its sessions: a request's
pieces on several sessions give the serial decoder's frames; a pool of mixed decoders (DALI's CPU decoder, PyAV
threads taking pieces while it is busy) gives every frame of the right number, PyAV's pieces bit for bit and DALI's
within its bound; a failing piece stops the request and its error names the piece; concurrent requests take turns;
a streamed request hands its frames over in order, in one buffer. The NVDEC sessions (DALI `mixed`, PyNvVideoCodec)
run only on a GPU: `benchmarks/gpu/gpu_decode.py` times and checks them there."""

from __future__ import annotations

import contextlib
import io
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from benchmarks.clips import natural_frame, write_rgb_clip
from tests.support.video import read_number, truncate, write_clip
from videoitg.decode import FrameStream, TruncatedVideoError, decode_video, stream_video
from videoitg.decode import pool as pool_module
from videoitg.decode.budget import Deadline
from videoitg.decode.choice import dali_available, nvc_available
from videoitg.decode.colour import signal_of
from videoitg.decode.container import build_index, select_video_stream
from videoitg.decode.errors import DecoderUnavailableError, DecodeTimeoutError
from videoitg.decode.pieces import plan_pieces
from videoitg.decode.pool import (
    DEFAULT_NVDEC_SESSIONS,
    RESERVED_CORES,
    DecodePool,
    PyAVSession,
    Video,
    Work,
    cpu_overflow_sessions,
    engines_by_name,
    nvdec_sessions,
    share_cores,
)
from videoitg.decode.structs import DecodeLimits
from videoitg.sampling import SamplingParams, sample_frame_indices

S = 32
MANY = SamplingParams(num_frames=40, target_fps=12.5)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pool")
    return {
        "bframes": write_clip(d / "bf.mp4", frames=200, gop=25, options={"preset": "medium", "bf": "3"}),
        "vp9": write_clip(d / "vp9.webm", codec="libvpx-vp9", frames=160, gop=10),
        "natural_vp9": write_rgb_clip(d / "nat.webm", [natural_frame(i % 25, 160, 96) for i in range(120)], gop=10),
        "rot90": write_clip(d / "rot.mp4", frames=100, gop=10, rotation=90, marker=True),
        "faststart": write_clip(d / "fast.mp4", frames=200, gop=10, faststart=True),
    }


def video_of(path: Path, params: SamplingParams = MANY, budget_s: float | None = None, name: str = "clip") -> Video:
    data = path.read_bytes()
    with av.open(io.BytesIO(data)) as c:
        s = select_video_stream(c, name)
        index = build_index(c, s, float(s.average_rate), DecodeLimits(), Deadline(None), name)
        c.seek(0)
        signal = signal_of(next(c.decode(s)))
    numbers = sample_frame_indices(index.total, index.fps, params)
    return Video(data, index, numbers, S, (signal.width, signal.height), signal, Deadline(budget_s), name)


def serial(path: Path, params: SamplingParams = MANY) -> np.ndarray:
    """The serial PyAV decoder's frames, as stored (not turned upright)."""
    frames = decode_video(path, image_size=S, params=params, workers=1, output="uint8", numpy=True)
    return np.ascontiguousarray(np.rot90(frames.pixel_values, -frames.info.rotation // 90, axes=(-2, -1)))


def run(pool: DecodePool, video: Video, **kw: object) -> tuple[np.ndarray, object]:
    out = np.zeros((len(video.frame_numbers), 3, S, S), np.uint8)
    job = pool.decode(video, out, **kw)
    return out, job


class Recorded(PyAVSession):
    """A PyAV session that records which request's piece it took, and when (a real decode)."""

    def __init__(self, number: int, log: list, delay_s: float = 0.0, overflow: bool = False,
                 holds: dict[tuple[str, int], threading.Event] | None = None) -> None:
        super().__init__(number, overflow=overflow)
        self.log, self.delay_s, self.holds = log, delay_s, holds or {}

    def run(self, work: list[Work]) -> None:
        for w in work:
            self.log.append((w.job.video.name, w.plan.number, time.monotonic()))
        for w in work:  # (video, piece) held until the test lets it go: an order no machine's load can change
            if (go := self.holds.get((w.job.video.name, w.plan.number))) is not None:
                assert go.wait(60), f"the test never let piece {w.plan.number} of {w.job.video.name} go"
        time.sleep(self.delay_s)
        super().run(work)


@pytest.mark.parametrize("name", ["bframes", "vp9", "rot90"])
@pytest.mark.parametrize("sessions", [1, 3])
def test_a_requests_pieces_on_several_sessions_are_the_serial_decoders_frames(clips: dict[str, Path], name: str,
                                                                               sessions: int) -> None:
    with contextlib.closing(DecodePool([PyAVSession(k) for k in range(sessions)])) as pool:
        video = video_of(clips[name])
        out, job = run(pool, video)
        assert len(job.pieces) >= 3 and sum(job.by_session.values()) == len(job.pieces)
        assert np.array_equal(out, serial(clips[name])), name
        if name != "rot90":
            assert [read_number(f.transpose(1, 2, 0)) for f in out] == video.frame_numbers
        if sessions > 1:
            assert len(job.by_session) > 1  # the sessions shared the pieces


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (extra 'dali')")
def test_a_pool_of_mixed_decoders_gives_every_frame_each_within_its_decoders_bound(clips: dict[str, Path]) -> None:
    """DALI's CPU decoder as the pool's decoder and two PyAV threads that take pieces while it is busy (what a GPU
    pool's overflow threads do beside NVDEC): the same frame numbers; PyAV's pieces bit for bit the serial
    decoder's, DALI's within its camera-content bound of them."""
    from videoitg.decode.dali import PIXEL_BOUNDS, DaliSession

    sessions = [DaliSession("cpu"), PyAVSession(0, overflow=True), PyAVSession(1, overflow=True)]
    with contextlib.closing(DecodePool(sessions)) as pool:
        path = clips["natural_vp9"]
        video = video_of(path)
        out, job = run(pool, video)
        want = serial(path)
        kinds = {n.split(":")[0] for n in job.decoded_by.values()}
        assert kinds == {"dali-cpu", "pyav"}, job.decoded_by  # both kinds decoded pieces of the one request
        max_, mean, _ = PIXEL_BOUNDS["camera"]
        for plan in job.pieces:
            got, ref = out[plan.first:plan.end].astype(int), want[plan.first:plan.end].astype(int)
            if job.decoded_by[plan.number].startswith("pyav"):
                assert np.array_equal(got, ref), plan.number
            else:
                d = np.abs(got - ref)
                assert d.max() <= max_ and d.mean() <= mean, (plan.number, d.max(), d.mean())


def test_an_overflow_session_waits_while_a_primary_one_is_idle(clips: dict[str, Path]) -> None:
    log: list = []
    with contextlib.closing(DecodePool([Recorded(0, log), Recorded(1, log, overflow=True)])) as pool:
        video = video_of(clips["vp9"], SamplingParams(num_frames=4, target_fps=1.0))
        _, job = run(pool, video, pieces=pool.plan(video)[:1])  # one piece: the primary session is free for it
        assert set(job.by_session) == {"pyav:0"}


def test_a_failing_piece_stops_the_request_and_its_error_names_the_piece(clips: dict[str, Path],
                                                                          tmp_path: Path) -> None:
    """A file cut short: the pieces past the cut fail; the request's error keeps the decoder's type and names the
    first failing piece; pieces not started when it failed never start."""
    bad = truncate(clips["faststart"], tmp_path / "cut.mp4", 0.6)  # its header first: it opens, frames are missing
    whole = video_of(clips["faststart"])
    log: list = []
    with contextlib.closing(DecodePool([Recorded(k, log, delay_s=0.05) for k in range(2)])) as pool:
        video = Video(bad.read_bytes(), whole.index, whole.frame_numbers, S, whole.size_wh, whole.colour,
                      Deadline(None), "cut.mp4")
        pieces = pool.plan(video)
        with pytest.raises(TruncatedVideoError, match=r"^cut\.mp4: piece \d+ of \d+ \(sampled frames \d+-\d+, "
                                                      r"decoded from frame \d+\) on pyav:\d: "):
            run(pool, video, pieces=pieces)
        time.sleep(0.3)
        assert len(log) < len(pieces)  # the request's other pieces stopped


def test_concurrent_requests_take_turns(clips: dict[str, Path]) -> None:
    """Round-robin by request: a request arriving while another's pieces decode has its first piece started next,
    not after all of the first request's pieces, and both finish (every frame the serial decoder's)."""
    log: list = []
    b_queued = threading.Event()  # a's first piece is held until b waits in the pool: no race with a busy machine
    with contextlib.closing(DecodePool([Recorded(0, log, delay_s=0.02, holds={("a", 0): b_queued})])) as pool:
        a, b = video_of(clips["vp9"], name="a"), video_of(clips["bframes"], name="b")
        results: dict[str, np.ndarray] = {}

        def one(v: Video) -> None:  # pieces of 4 frames: 10 a request
            results[v.name] = run(pool, v, pieces=plan_pieces(v.index, v.frame_numbers, 4, 100))[0]

        ta = threading.Thread(target=one, args=(a,))
        ta.start()
        started = time.monotonic()
        while not log:  # a's first piece has started
            assert time.monotonic() - started < 60, "no piece of a started"
            time.sleep(0.005)
        tb = threading.Thread(target=one, args=(b,))
        tb.start()
        while not b_queued.is_set():
            assert time.monotonic() - started < 60, "b never reached the pool"
            with pool._cond:
                if any(j.video.name == "b" for j in pool._jobs):
                    b_queued.set()
            time.sleep(0.005)
        ta.join(60)
        tb.join(60)
        order = [n for n, _, _ in log]
        first_b = order.index("b")
        assert first_b <= 2 and order.count("a") > 4, order  # b's first piece within a's next two
        assert "a" in order[first_b + 1:first_b + 3]  # and then a again: turns, not b's whole request
        assert np.array_equal(results["a"], serial(clips["vp9"])) and np.array_equal(results["b"],
                                                                                    serial(clips["bframes"]))


def test_a_streamed_request_hands_over_its_frames_in_order_in_one_buffer(clips: dict[str, Path]) -> None:
    """Progress from the pool reaches a `FrameStream`: leading chunks are read while later pieces decode (a slow
    session), in order, each a view of the one output buffer (memory does not grow with the consumer's lag)."""
    log: list = []
    first_read = threading.Event()  # the last piece decodes only once the first chunk was read
    holds: dict[tuple[str, int], threading.Event] = {}
    with contextlib.closing(DecodePool([Recorded(k, log, delay_s=0.05, holds=holds) for k in range(2)])) as pool:
        video = video_of(clips["vp9"])
        holds[(video.name, pool.plan(video)[-1].number)] = first_read
        stream = FrameStream()
        out = np.zeros((len(video.frame_numbers), 3, S, S), np.uint8)
        stream.begin(out)
        done = threading.Event()

        def decode() -> None:
            try:
                pool.decode(video, out, progress=lambda n: stream.advance(n, 0))
            except BaseException as e:  # the reader below hears of it, not waits for ever
                stream.finish(None, e)
                raise
            done.set()

        threading.Thread(target=decode).start()
        chunks, early = [], None
        for chunk in stream.chunks(4):
            chunks.append(chunk)
            if early is None:
                early = not done.is_set()  # the first chunk came before the decode ended
                first_read.set()
            assert np.shares_memory(chunk, out)
        assert early and done.wait(30)
        assert np.array_equal(np.concatenate(chunks), serial(clips["vp9"]))


def test_a_consumer_that_stops_cancels_the_rest_of_the_request(clips: dict[str, Path]) -> None:
    log: list = []
    with contextlib.closing(DecodePool([Recorded(0, log, delay_s=0.05)])) as pool:
        video = video_of(clips["vp9"])
        stream = FrameStream()
        out = np.zeros((len(video.frame_numbers), 3, S, S), np.uint8)
        stream.begin(out)
        stream.cancel()
        with pytest.raises(Exception, match="stopped reading"):
            pool.decode(video, out, progress=lambda n: stream.advance(n, 0))
        assert len(log) < len(pool.plan(video))


def test_a_request_past_its_time_budget_fails_with_the_timeout(clips: dict[str, Path]) -> None:
    log: list = []
    with contextlib.closing(DecodePool([Recorded(0, log, delay_s=0.4)])) as pool:
        with pytest.raises(DecodeTimeoutError, match="time budget"):
            run(pool, video_of(clips["vp9"], budget_s=0.5))


@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI not installed (extra 'dali')")
def test_decode_video_streams_a_pool_decode(clips: dict[str, Path]) -> None:
    """`stream_video(decoder="dali")` (the process's DALI pool): uint8 chunks in order, the frames of the whole
    decode; the result says which sessions decoded how many pieces."""
    path = clips["vp9"]
    whole = decode_video(path, image_size=S, params=MANY, decoder="dali", output="uint8")
    stream = stream_video(path, image_size=S, params=MANY, decoder="dali", output="uint8")
    chunks = list(stream.chunks(8))
    assert np.array_equal(np.concatenate(chunks), whole.pixel_values.numpy())
    result = stream.result()
    assert result.decoder == "dali-cpu" and sum(result.pieces.values()) >= 1 and result.decoded_frames > 0


def test_without_nvml_the_sessions_are_the_cards_datasheet_engines_or_the_default(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import torch

    def no_cuda(index: int) -> str:
        raise RuntimeError("no CUDA")

    monkeypatch.setitem(sys.modules, "pynvml", None)  # `import pynvml` fails, as where nvidia-ml-py is absent
    monkeypatch.setattr(torch.cuda, "get_device_name", no_cuda)
    assert nvdec_sessions(0) == (DEFAULT_NVDEC_SESSIONS, "default")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: "NVIDIA L40S")
    assert nvdec_sessions(0) == (3, "datasheet (NVIDIA L40S)")
    assert [engines_by_name(n) for n in ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB",
                                         "NVIDIA L40S", "NVIDIA L4", "NVIDIA RTX A6000")] == [7, 7, 5, 3, 4, None]


def test_a_pool_needs_a_primary_session() -> None:
    with pytest.raises(ValueError, match="at least one session"):
        DecodePool([PyAVSession(0, overflow=True)])


def test_pynvvideocodec_is_refused_where_it_cannot_decode(clips: dict[str, Path]) -> None:
    """NVDEC only: asked for frames on the CPU (or without a GPU) it is a typed refusal naming the way out."""
    with pytest.raises(DecoderUnavailableError, match="NVDEC only"):
        decode_video(clips["bframes"], image_size=S, params=MANY, decoder="pynvvideocodec")


@pytest.mark.skipif(not nvc_available(), reason="PyNvVideoCodec cannot be imported here (not installed, or no "
                                                "NVIDIA driver)")
def test_pynvvideocodec_gives_pyavs_frames(clips: dict[str, Path]) -> None:  # pragma: no cover - needs a GPU
    path = write_clip(clips["bframes"].parent / "h264.mp4", frames=100, gop=20)
    got = decode_video(path, image_size=S, params=MANY, decoder="pynvvideocodec", device="cuda", output="uint8")
    assert got.decoder == "nvc-gpu"
    assert np.array_equal(got.pixel_values.cpu().numpy(), serial(path))


def test_overflow_threads_are_this_process_s_share_of_the_spare_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    """Catches: every decode instance (a process each) starting one PyAV overflow thread per spare core, so four
    instances ran four threads per core."""
    assert len(cpu_overflow_sessions(cores=16, share=1)) == 16 - RESERVED_CORES
    assert len(cpu_overflow_sessions(cores=16, share=4)) == 4  # 14 spare cores: 3.5 a process, rounded up
    assert len(cpu_overflow_sessions(cores=16, share=20)) == 1 and cpu_overflow_sessions(cores=2, share=1) == []
    monkeypatch.setattr(pool_module, "_CORE_SHARE", 1)  # `share_cores` sets the process's share for its pool
    share_cores(2)
    assert len(cpu_overflow_sessions(cores=16)) == 7 and all(s.overflow for s in cpu_overflow_sessions(cores=16))
