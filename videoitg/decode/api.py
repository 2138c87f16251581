"""`decode_video` and `probe_video`: the decode layer's public entry points."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import av
import numpy as np

from videoitg.decode import threads as kept
from videoitg.decode.budget import Deadline, run_with_budget
from videoitg.decode.choice import choose_decoder, decoder_name
from videoitg.decode.colour import YuvSignal
from videoitg.decode.container import (
    FrameIndex,
    OpenedSource,
    Source,
    box_truncation,
    build_index,
    check_decode_work,
    check_header_limits,
    check_source,
    check_truncation,
    describe,
    first_frame_facts,
    header_info,
    info_from,
    open_container,
    select_video_stream,
)
from videoitg.decode.errors import (
    DecoderUnavailableError,
    DecodeTimeoutError,
    TruncatedVideoError,
    VideoTooLargeError,
)
from videoitg.decode.parallel import FrameStream, StreamCancelledError, decode_frames, machine_workers
from videoitg.decode.pyav import apply_rotation, decode_each, frame_rotation
from videoitg.decode.structs import DecodeLimits, SampledFrames, VideoInfo
from videoitg.errors import InputError, VideoDecodeError
from videoitg.sampling import SamplingParams, sample_frame_indices

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

DEFAULT_SAMPLING = SamplingParams()  # eval rule, 512 frames at 1 fps (frozen, safe to share)
OUTPUTS = {"float32": np.float32, "uint8": np.uint8}


def _truncated_instead(src: OpenedSource, name: str, e: VideoDecodeError) -> None:
    """An MP4 cut inside its stream table fails in many ways ("no video stream", "codec unknown", "no frames");
    when its box sizes show the cut, say so."""
    if isinstance(e, (TruncatedVideoError, VideoTooLargeError, DecodeTimeoutError, DecoderUnavailableError)):
        return
    why = box_truncation(src)
    if why is not None:
        raise TruncatedVideoError(f"{name}: {why} (file truncated)") from None


def decode_video(source: Source, *, image_size: int = 384, params: SamplingParams = DEFAULT_SAMPLING,
                 decoder: str = "auto", time_budget_s: float | None = 60, limits: DecodeLimits | None = None,
                 device: str | torch.device | None = None, output: str = "float32", workers: int | None = None,
                 frame_stream: FrameStream | None = None, numpy: bool = False) -> SampledFrames:
    """Decode only the sampled frames of a video and preprocess them for SigLIP.

    source: a path or the encoded bytes. decoder: "auto", "pyav", "dali" or "pynvvideocodec" (`videoitg.decoders`);
    the frames' `SampledFrames.decoder` says what ran: "pyav", "dali-cpu", "dali-gpu" (NVDEC) or "nvc-gpu" (NVDEC
    through PyNvVideoCodec). time_budget_s: wall-clock limit for the whole call (None: no limit). device: where the
    tensor should end up. A CUDA device makes "dali" NVDEC and lets "auto" pick it (output stays on the GPU); CPU
    decoders copy their result there. None: CPU. DALI and PyNvVideoCodec decode through the process's decode pool
    (`videoitg.decode.pool`: the request's pieces on every session at once, shared with concurrent requests).
    output: "float32" (SigLIP pixel values) or "uint8" (the resized RGB frames, a quarter of the bytes, to be
    normalised on the device by `videoitg.preprocess.pixel_values`).
    workers: PyAV decoder threads over GOP ranges (None: the machine's cores; 1: one decoder). The frames
    are the same whatever the number. frame_stream: a `FrameStream` told about each finished leading frame (a pool's
    decode streams its uint8 frames). numpy: frames in host memory as a numpy array (`device` is not applied),
    without loading torch for PyAV (the served decode step); a GPU's are torch tensors either way. Raises a
    `VideoDecodeError` subclass naming what was wrong with the input.
    """
    if not isinstance(image_size, int) or image_size < 1:
        raise InputError(f"image_size must be a positive int, got {image_size!r}")
    if output not in OUTPUTS:
        raise InputError(f"output must be one of {', '.join(OUTPUTS)}, got {output!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a positive int or None, got {workers!r}")
    workers = workers or machine_workers()
    requested = decoder_name(decoder)
    limits = limits or DecodeLimits()
    src = check_source(source, limits)
    name = describe(source)

    def work(deadline: Deadline) -> SampledFrames:
        try:
            return decode(deadline)
        except VideoDecodeError as e:
            _truncated_instead(src, name, e)
            raise

    def decode(deadline: Deadline) -> SampledFrames:
        t0 = time.perf_counter()
        deadline.check("opening the container")
        with open_container(src) as container:
            stream, head, index, frame_numbers = _checked_sampling(container, src, params, limits, deadline, name)
            want_cuda = device is not None and str(device).startswith("cuda")
            chosen = choose_decoder(requested, head["codec"], index, want_cuda)
            deadline.check(f"decoding with {chosen}")
            pixels, colour, job = None, None, None
            if chosen != "pyav":
                try:
                    rotation, colour = first_frame_facts(container, stream)
                    pixels, job = _pool_decode(chosen, src.read_all(limits), index, frame_numbers, image_size,
                                               (head["width"], head["height"]), colour, deadline, name, limits,
                                               device, output, frame_stream, rotation)
                except (DecodeTimeoutError, VideoTooLargeError, StreamCancelledError):  # not the decoder's fault
                    raise
                except Exception as e:  # auto only: the file passed PyAV's checks, so PyAV can still do it
                    if requested != "auto":
                        raise
                    log.warning("%s: %s failed (%s); decoding with pyav instead", name, chosen, e)
                    chosen, pixels = "pyav", None
                    container.seek(0, backward=True, any_frame=False)
                    stream.codec_context.flush_buffers()
            if pixels is None:
                pixels = np.empty((len(frame_numbers), 3, image_size, image_size), dtype=OUTPUTS[output])
                if frame_stream is not None:
                    frame_stream.begin(pixels)
                advance = frame_stream.advance if frame_stream is not None else None
                if index.ordinal:
                    # A raw elementary stream (no timestamps) cannot seek back to its start after indexing: reopen.
                    with open_container(src) as fresh:
                        rotation = decode_frames(src, fresh, select_video_stream(fresh, name), index, frame_numbers,
                                                 pixels, limits, deadline, name, workers, advance)
                else:
                    rotation = decode_frames(src, container, stream, index, frame_numbers, pixels, limits,
                                             deadline, name, workers, advance)
        pixels = apply_rotation(pixels, rotation)
        if job is not None and output == "float32":  # a pool's frames are uint8: SigLIP's values where they are
            import torch

            from videoitg.preprocess import pixel_values

            pixels = pixel_values(torch.as_tensor(pixels))
        if not numpy or not isinstance(pixels, np.ndarray):
            import torch

            pixels = torch.as_tensor(pixels)  # PyAV's array, not copied; a device's tensor as it is
            if device is not None and pixels.device != torch.device(device):
                pixels = pixels.to(device)
        return SampledFrames(
            pixel_values=pixels, frame_indices=frame_numbers,
            timestamps=[index.seconds(i) for i in frame_numbers], fps=index.fps, total_frames=index.total,
            decoder=chosen, info=info_from(head, index, rotation, colour), decode_s=time.perf_counter() - t0,
            pieces=dict(job.by_session) if job is not None else {},
            decoded_frames=job.decoded_frames if job is not None else 0)

    return run_with_budget(work, time_budget_s)


def _pool_decode(chosen: str, data: bytes, index: FrameIndex, frame_numbers: list[int], image_size: int,
                 size_wh: tuple[int, int], colour: YuvSignal | None, deadline: Deadline, name: str,
                 limits: DecodeLimits, device: str | torch.device | None, output: str,
                 frame_stream: FrameStream | None, rotation: int) -> tuple[Any, Any]:
    """The sampled frames ([T, 3, S, S] uint8, as stored: not yet turned upright) decoded by the process's decode
    pool for `chosen` (`pool.shared_pool`), and the pool's finished job. A uint8 request streams: `frame_stream`
    hears of each finished leading run of frames."""
    from videoitg.decode.pool import Video, shared_pool  # torch (and DALI or PyNvVideoCodec): only where they run

    target = None
    if chosen != "dali-cpu":
        import torch

        target = torch.device(device) if device is not None else torch.device("cuda")
        if target.type != "cuda":
            target = torch.device("cuda")
        if target.index is None:
            target = torch.device("cuda", torch.cuda.current_device())
    w, h = size_wh
    signal = colour or YuvSignal(width=w, height=h)
    video = Video(data, index, frame_numbers, image_size, size_wh, signal, deadline, name, limits)
    pool = shared_pool(chosen, str(target) if target is not None else None)
    shape = (len(frame_numbers), 3, image_size, image_size)
    if target is None:
        out: Any = np.empty(shape, np.uint8)
    else:
        import torch

        out = torch.empty(shape, dtype=torch.uint8, device=target)
    progress = None
    if frame_stream is not None and output == "uint8":
        frame_stream.begin(out)
        progress = lambda done: frame_stream.advance(done, rotation)
    job = pool.decode(video, out, progress)
    return out, job


def probe_video(source: Source, *, count_frames: bool | None = None, limits: DecodeLimits | None = None,
                time_budget_s: float | None = 30) -> VideoInfo:
    """Metadata without decoding the video (one frame is decoded to read the display rotation).

    count_frames: None (default) counts packets only when the header has no frame count or rate (WebM/MKV,
    raw streams); True always counts (exact frame count, real average rate, variable-frame-rate flag);
    False never does (frame count may then be an estimate from duration x fps, `frame_count_source` says).
    """
    limits = limits or DecodeLimits()
    src = check_source(source, limits)
    name = describe(source)

    def work(deadline: Deadline) -> VideoInfo:
        try:
            return probe(deadline)
        except VideoDecodeError as e:
            _truncated_instead(src, name, e)
            raise

    def probe(deadline: Deadline) -> VideoInfo:
        with open_container(src) as container:
            stream = select_video_stream(container, name)
            head = header_info(container, stream)
            need = count_frames if count_frames is not None else (head["frames"] <= 0 or head["fps"] <= 0)
            index = build_index(container, stream, head["fps"], limits, deadline, name) if need else None
            return info_from(head, index, *first_frame_facts(container, stream))

    return run_with_budget(work, time_budget_s)


@dataclass(frozen=True)
class DecodePlan:
    """What a decoder outside this module needs to decode a video's sampled frames as `decode_video` would."""

    frame_indices: list[int]
    timestamps: list[float]
    fps: float
    rotation: int  # degrees counter-clockwise the frames must turn to display upright (`apply_rotation`)
    colour: YuvSignal  # how FFmpeg reads the YUV samples (`colour.py`; the untagged default at the stream's size
    # when the first frame does not decode)


def plan_decode(source: Source, *, params: SamplingParams = DEFAULT_SAMPLING, limits: DecodeLimits | None = None,
                time_budget_s: float | None = 30) -> DecodePlan:
    """The sampled frame numbers (the released rule, on the packet index), their timestamps, the rotation and the
    colour signal, after every check `decode_video` makes before it decodes (bytes, header limits, truncation,
    decode work): what a decoder outside this module needs to decode them as `decode_video` would. Decodes one frame
    (the first)."""
    limits = limits or DecodeLimits()
    src = check_source(source, limits)
    name = describe(source)

    def work(deadline: Deadline) -> DecodePlan:
        try:
            with open_container(src) as container:
                stream, head, index, frames = _checked_sampling(container, src, params, limits, deadline, name)
                rotation, colour = first_frame_facts(container, stream)
                # No frame decoded here: the untagged default, at the stream's size (DALI's chroma steps need it).
                colour = colour or YuvSignal(width=head["width"], height=head["height"])
        except VideoDecodeError as e:
            _truncated_instead(src, name, e)
            raise
        return DecodePlan(frames, [index.seconds(i) for i in frames], index.fps, rotation, colour)

    return run_with_budget(work, time_budget_s)


def _checked_sampling(container: av.container.InputContainer, src: OpenedSource, params: SamplingParams,
                      limits: DecodeLimits, deadline: Deadline, name: str) -> tuple:
    """(stream, header, packet index, sampled frame numbers) once the header limits, truncation and decode work
    are checked; sets the deadline's pixel bound for the decoder's own count."""
    stream, head, index = _checked_index(container, limits, deadline, name)
    frame_numbers = sample_frame_indices(index.total, index.fps, params)
    deadline.max_pixels = check_decode_work(index, frame_numbers, head["width"], head["height"], src.nbytes,
                                            limits, name)
    return stream, head, index, frame_numbers


def _checked_index(container: av.container.InputContainer, limits: DecodeLimits, deadline: Deadline,
                   name: str) -> tuple:
    """(stream, header, packet index) once the header limits and truncation are checked."""
    stream = select_video_stream(container, name)
    head = header_info(container, stream)
    check_header_limits(head, limits, name)
    index = build_index(container, stream, head["fps"], limits, deadline, name)
    check_truncation(head, index, name)
    return stream, head, index


def decode_full_frames(source: Source, frame_numbers: Sequence[int], *,
                       transform: Callable[[np.ndarray], Any] | None = None, limits: DecodeLimits | None = None,
                       time_budget_s: float | None = 60) -> list[Any]:
    """The frames `frame_numbers` (the numbering `decode_video` samples in: `SampledFrames.frame_indices`,
    `GroundingResult.frame_indices`) at the video's own size, upright: RGB uint8 [H, W, 3], one per number, in
    the order given. The same decoder as `decode_video` (PyAV, the same seeks and checks), without its squash to
    S x S. `transform`, when given, is applied to each frame as it is decoded and its result is kept instead (a
    caller that encodes or shrinks the frames then holds one full-size frame at a time)."""
    limits = limits or DecodeLimits()
    src = check_source(source, limits)
    name = describe(source)
    wanted = sorted(set(int(n) for n in frame_numbers))

    def work(deadline: Deadline) -> list[Any]:
        kept: dict[int, Any] = {}

        def put(first: int, end: int, frame: av.VideoFrame) -> None:
            image = frame.to_ndarray(format="rgb24")
            if rotation_of[0] is None:  # the first decoded frame's, for every frame (as decode_video turns them)
                rotation_of[0] = frame_rotation(frame)
            image = np.ascontiguousarray(apply_rotation(image.transpose(2, 0, 1), rotation_of[0]).transpose(1, 2, 0))
            for j in range(first, end):
                kept[wanted[j]] = transform(image) if transform is not None else image

        rotation_of: list[int | None] = [None]
        try:
            with open_container(src) as container:
                stream, head, index = _checked_index(container, limits, deadline, name)
                outside = [n for n in wanted if not 0 <= n < index.total]
                if outside:
                    raise InputError(f"{name}: frame {outside[0]} is not in the video (frames 0..{index.total - 1})")
                deadline.max_pixels = check_decode_work(index, wanted, head["width"], head["height"], src.nbytes,
                                                        limits, name)
                deadline.check("decoding")
                if index.ordinal:  # no timestamps: cannot seek back to the start after indexing, reopen
                    with open_container(src) as fresh:
                        decode_each(fresh, select_video_stream(fresh, name), index, wanted, limits, deadline, name,
                                    put)
                else:
                    decode_each(container, stream, index, wanted, limits, deadline, name, put)
        except VideoDecodeError as e:
            _truncated_instead(src, name, e)
            raise
        return [kept[int(n)] for n in frame_numbers]

    return run_with_budget(work, time_budget_s)


def stream_video(source: Source, **kwargs: Any) -> FrameStream:
    """Start `decode_video(source, **kwargs)` in a background thread and return its `FrameStream` at once:
    `stream.chunks(n)` yields the leading frames as they are decoded, `stream.result()` the `SampledFrames`
    (or raises the decode's error). Lets a consumer run the vision tower on frames ..k while k+1.. decode."""
    stream = FrameStream()

    def run() -> None:
        try:
            stream.finish(decode_video(source, frame_stream=stream, **kwargs))
        except BaseException as e:  # handed to the consumer
            stream.finish(None, e)

    kept.start(run, "videoitg-stream")
    return stream
