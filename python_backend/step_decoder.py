"""The decode step's answers: which decoder it runs (`StepDecoder`), and a video's sampled frames as one answer
(`decode_whole`) or streamed in chunks (`decode_stream`), uint8 whichever decoder runs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from videoitg.contract.protocol import DURATION, FRAME_INDICES, NUM_FRAMES, PIXEL_VALUES, TIMESTAMPS, check_decoder
from videoitg.contract.tensors import duration_value
from videoitg.decode import DecoderUnavailableError, decode_video, stream_video
from videoitg.moments import frames_duration
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams


@dataclass(frozen=True)
class StepDecoder:
    """How the decode step decodes: `decode_video`'s decoder and device, and what its start self-test runs (None:
    pyav, no self-test; "mixed": DALI on NVDEC; "cpu": DALI's CPU decoder; "nvc": PyNvVideoCodec). Every served
    decoder answers uint8 frames (normalised by the vision step)."""

    decoder: str
    device: str | None = None
    self_test: str | None = None

    @classmethod
    def of(cls, parameter: str, device: str) -> StepDecoder:
        """`parameter`: the step's `decoder` (`videoitg.decoders.SERVED`; "" is pyav); `device`: the instance's
        (`params.instance_device`). On a GPU instance dali is `decode_video`'s automatic choice on that device: NVDEC
        (the process's decode pool) for the streams whose frames it numbers as PyAV does, PyAV (the same frames,
        moved to the GPU) for variable-rate or timestamp-less streams and codecs NVDEC lacks. On a CPU instance,
        DALI's CPU decoder (VP8, VP9 and MJPEG only). pynvvideocodec: NVDEC through PyNvVideoCodec, a GPU instance
        only."""
        name = check_decoder(parameter or "pyav")
        if name == "pyav":
            return cls("pyav")
        if name == "pynvvideocodec":
            if not device.startswith("cuda"):
                raise DecoderUnavailableError("the pynvvideocodec decoder decodes on NVDEC only: serve it on the gpu "
                                              "target (a KIND_GPU decode instance), or serve with --decoder pyav")
            return cls("pynvvideocodec", device, "nvc")
        if device.startswith("cuda"):
            return cls("auto", device, "mixed")
        return cls("dali", None, "cpu")

    @property
    def pooled(self) -> bool:
        """Whether the step decodes through the process's decode pool on a GPU, which takes concurrent requests
        (their pieces share the card's NVDEC sessions) rather than one video at a time."""
        return self.device is not None

    def device_id(self) -> int:
        """The GPU of `device` ("cuda:N"; "cuda" is GPU 0)."""
        return int(self.device.partition(":")[2] or 0) if self.device else 0


PYAV = StepDecoder("pyav")


def decode_whole(video: bytes | Path, image_size: int, sampling: SamplingParams, limits: Limits,
                 decoder: StepDecoder = PYAV) -> dict[str, Any]:
    """The decode step's one answer: {PIXEL_VALUES [1, T, 3, S, S] uint8, FRAME_INDICES [1, T], TIMESTAMPS [1, T],
    DURATION [1, 1]}; the frames a numpy array in host memory, or (NVDEC) a tensor on the instance's GPU.
    A path (a video by reference, `references.decode_source`) is bounded by max_reference_bytes instead of
    max_video_bytes."""
    options = _decode_options(image_size, sampling, limits, isinstance(video, Path))
    frames = decode_video(video, **options, decoder=decoder.decoder, device=decoder.device, numpy=True)
    return {PIXEL_VALUES: frames.pixel_values[None], **_frame_numbers(frames)}


def decode_stream(video: bytes | Path, image_size: int, sampling: SamplingParams, limits: Limits,
                  chunk_frames: int, decoder: StepDecoder = PYAV) -> Iterator[dict[str, Any]]:
    """The streaming decode step's answers, in order: one {PIXEL_VALUES [1, t, 3, S, S] uint8, NUM_FRAMES [1, 1]}
    per `chunk_frames` decoded frames as soon as they are decoded (so the vision step encodes them while the rest
    decode), then {FRAME_INDICES [1, T], TIMESTAMPS [1, T], DURATION [1, 1]} once the decode is over. The chunks are
    `decode_whole`'s frames, in order (numpy arrays, or NVDEC's tensors on the instance's GPU: views of the one
    output the decode pool fills); the decode's error, if any, is raised where it happens."""
    stream = stream_video(video, **_decode_options(image_size, sampling, limits, isinstance(video, Path)),
                          decoder=decoder.decoder, device=decoder.device, numpy=True)
    total = np.asarray([[len(stream)]], dtype=np.int64)
    for chunk in stream.chunks(chunk_frames):
        yield {PIXEL_VALUES: chunk[None], NUM_FRAMES: total}
    yield _frame_numbers(stream.result())


def _decode_options(image_size: int, sampling: SamplingParams, limits: Limits, reference: bool) -> dict[str, Any]:
    """The served decode: the deployment's sampling and limits, uint8 frames (normalised by the vision step)."""
    return {"image_size": image_size, "params": sampling,
            "limits": limits.reference_decode() if reference else limits.decode,
            "time_budget_s": limits.decode_time_budget_s, "output": "uint8"}


def _frame_numbers(frames: Any) -> dict[str, np.ndarray]:
    """The sampled frames' numbers and times, and the video's DURATION (seconds from the container, 0 where it
    did not say: `videoitg.contract.tensors.duration_value`), which bounds the moments."""
    return {FRAME_INDICES: np.asarray([frames.frame_indices], dtype=np.int64),
            TIMESTAMPS: np.asarray([frames.timestamps], dtype=np.float64),
            DURATION: np.asarray([[duration_value(frames_duration(frames))]], dtype=np.float64)}
