"""How the top-level model calls its steps over BLS: a video's features from the decode and vision steps, streamed
or whole, and logits from the grounding step. Features in host memory in a type numpy has are kept as numpy arrays
(no torch in the top-level model on a CPU); on a GPU, or in bfloat16, as torch tensors. Every wait for a step is
bounded by the deadline of the request being served (`DEADLINE`), and a step that cannot answer is an error naming
it (`errors.step_error`)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
from collections.abc import Awaitable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import triton_python_backend_utils as pb_utils

from videoitg.contract.protocol import (
    DECODE,
    DURATION,
    FEATURES,
    FRAME_INDICES,
    INSTRUCTION,
    LOGITS,
    NUM_FRAMES,
    PIXEL_VALUES,
    TIMESTAMPS,
    VIDEO,
    VIDEO_URI,
    VIDEO_VERSION,
    signatures,
)
from videoitg.contract.repairs import RepairsSeen
from videoitg.moments import known_duration
from videoitg.pipeline.features import VideoFeatures
from videoitg.request.limits import Limits
from videoitg.sampling import SamplingParams

from .errors import (
    STEP_WAIT_S,
    StepError,
    StepTimeoutError,
    StepUnavailableError,
    step_error,
    step_repaired,
    step_timeout,
)
from .references import FileVideo
from .requester import REQUESTER, requester_token
from .tensors import bytes_tensor, output_tensor, response_tensor

T = TypeVar("T")
# The event-loop time by which the request being served must be answered (None: unbounded), set by the top-level
# model in each request's task; the tasks it starts (a shared computation, the vision calls of a streamed decode)
# inherit it.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("videoitg_deadline", default=None)
# What the launcher says of the steps' repairs (`contract.repairs`), looked at this often while a step is awaited.
REPAIRS = RepairsSeen.from_environment()
REPAIR_LOOK_S = 0.5
# A stream that ended short waits this long for the word of its step's repair (the watchdog looks every second).
REPAIR_WORD_S = 3.0


async def bounded(model: str, waiting: Awaitable[T]) -> T:
    """`waiting` (an answer of step `model`), within the request's deadline: StepTimeoutError naming the step
    past it; StepUnavailableError naming it once the launcher says the step was repaired after `waiting` was sent
    (`contract.repairs`: tritonserver 2.51 never answers it then). Looked at every `REPAIR_LOOK_S` while it waits."""
    loop = asyncio.get_running_loop()
    sent, deadline = loop.time(), DEADLINE.get()
    answer = asyncio.ensure_future(waiting)
    try:
        while True:
            left = REPAIR_LOOK_S if deadline is None else min(REPAIR_LOOK_S, deadline - loop.time())
            if left <= 0:
                raise step_timeout(model, STEP_WAIT_S)
            done, _ = await asyncio.wait((answer,), timeout=left)
            if done:
                return answer.result()
            unloaded = REPAIRS.unloaded_at(model)
            if unloaded is not None and unloaded > sent:
                raise step_repaired(model)
    finally:
        answer.cancel()  # a no-op once it is done


async def ended_short(model: str, sent: float, missing: str) -> StepError:
    """The error for step `model`'s stream, sent at `sent`, that ended without its `missing`: a stub that dies
    under a stream may end it with no answer and no error. Once the launcher says the step was repaired after
    `sent` (waited for up to `REPAIR_WORD_S`, within the deadline), StepUnavailableError naming it (try again);
    otherwise an internal error."""
    loop = asyncio.get_running_loop()
    deadline = DEADLINE.get()
    until = loop.time() + REPAIR_WORD_S if deadline is None else min(deadline, loop.time() + REPAIR_WORD_S)
    while True:
        unloaded = REPAIRS.unloaded_at(model)
        if unloaded is not None and unloaded > sent:
            return step_repaired(model)
        if loop.time() >= until:
            return StepError(f"{model}: internal error: the stream ended without {missing}")
        await asyncio.sleep(0.1)


def _drain(answers: Iterator[Any]) -> None:
    """Read a decoupled step's answers to the end (its iterator would otherwise do so wherever it is freed)."""
    for _ in answers:
        pass


def _numpy(response: Any, name: str) -> np.ndarray:
    return pb_utils.get_output_tensor_by_name(response, name).as_numpy().reshape(-1)


def _duration(response: Any) -> float | None:
    """The decode step's DURATION (seconds, 0 where the container did not say): None when absent or unknown."""
    tensor = pb_utils.get_output_tensor_by_name(response, DURATION)
    return None if tensor is None else known_duration(float(tensor.as_numpy().reshape(-1)[0]))


def _owned(parts: list[Any]) -> Any:
    """One video's features from its chunks' (`parts`), copied out of the responses' shared memory: the cache may
    keep them long."""
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    import torch

    return torch.cat(parts)


def _video_inputs(video: bytes | FileVideo) -> list[Any]:
    """The decode step's video inputs (one video per request, with a batch axis of 1): VIDEO, or VIDEO_URI with the
    identity of the file the BLS model hashed (VIDEO_VERSION)."""
    if isinstance(video, FileVideo):
        return [bytes_tensor(VIDEO_URI, [os.fsencode(video.path)], (1, 1)),
                bytes_tensor(VIDEO_VERSION, [video.identity.encode()], (1, 1))]
    return [bytes_tensor(VIDEO, [video], (1, 1))]


@dataclass
class Steps:
    """Streamed (`stream_frames` > 0, every served decoder): each decoded chunk goes to the vision step as it
    arrives, so the tower encodes the first frames while the last decode; on a GPU DALI's chunks reach the vision
    step by DLPack without leaving it. Whole (`stream_frames` 0): one decode answer, one vision call."""

    decode: str
    vision: str
    grounding: str
    decoder: str  # the decode step's (`videoitg.decoders.SERVED`)
    streaming: bool
    sampling: SamplingParams
    limits: Limits
    workers: ThreadPoolExecutor  # blocking work of a cold video (stream reads, the DALI plan): one thread each
    host_features: bool = False  # the vision step's FEATURES can be read as numpy (`params.host_features`)

    @cached_property
    def decode_outputs(self) -> list[str]:
        """What the decode step answers (`videoitg.contract.protocol`): the frames, their numbers and the duration;
        the video's NUM_FRAMES with each chunk when it streams."""
        return [t.name for t in signatures("bls", self.decoder, streaming=self.streaming)[DECODE].outputs]

    async def call(self, model: str, inputs: list[Any], outputs: list[str]) -> Any:
        resp = await bounded(model, pb_utils.InferenceRequest(model_name=model, inputs=inputs,
                                                              requested_output_names=outputs).async_exec())
        if resp.has_error():
            raise step_error(model, resp.error().message())
        return resp

    async def visual(self, video: bytes | FileVideo) -> VideoFeatures:
        """A video's features, from its bytes or a file by reference (the python decode step opens it itself:
        gigabytes never pass through tensors)."""
        if self.streaming:
            return await self._visual_streamed(video)
        dec = await self.call(self.decode, _video_inputs(video), self.decode_outputs)
        vis = await self.call(self.vision, [pb_utils.get_output_tensor_by_name(dec, PIXEL_VALUES)], [FEATURES])
        return VideoFeatures(_owned([response_tensor(vis, FEATURES, self.host_features)[0]]),
                             _numpy(dec, FRAME_INDICES).tolist(), _numpy(dec, TIMESTAMPS).tolist(), _duration(dec))

    async def _visual_streamed(self, video: bytes | FileVideo) -> VideoFeatures:
        """Each chunk goes to the vision step with the video's frame count (the projector's grid); the frame
        numbers come last. The request names this process (`REQUESTER`): a decode step whose requester died stops
        instead of blocking on its next answer."""
        loop = asyncio.get_running_loop()
        sent = loop.time()
        answers = await bounded(self.decode, pb_utils.InferenceRequest(
            model_name=self.decode, inputs=_video_inputs(video),
            requested_output_names=self.decode_outputs, parameters={REQUESTER: requester_token()},
        ).async_exec(decoupled=True))
        chunks: list[asyncio.Task] = []
        indices = timestamps = None
        duration: float | None = None
        hung = False  # a read of the stream outlived the deadline: its worker stays blocked until the step ends
        try:
            while True:
                try:
                    dec = await bounded(self.decode, loop.run_in_executor(self.workers, next, answers, None))
                except (StepTimeoutError, StepUnavailableError):  # past the deadline, or the step repaired
                    hung = True
                    raise
                if dec is None:
                    break
                if dec.has_error():
                    raise step_error(self.decode, dec.error().message())
                pixels = pb_utils.get_output_tensor_by_name(dec, PIXEL_VALUES)
                if pixels is not None:
                    num_frames = pb_utils.get_output_tensor_by_name(dec, NUM_FRAMES)
                    chunks.append(loop.create_task(self.call(self.vision, [pixels, num_frames], [FEATURES])))
                if pb_utils.get_output_tensor_by_name(dec, FRAME_INDICES) is not None:  # the last answer
                    indices, timestamps = _numpy(dec, FRAME_INDICES), _numpy(dec, TIMESTAMPS)
                    duration = _duration(dec)
            if indices is None or not chunks:
                raise await ended_short(self.decode, sent, "frames" if not chunks else "frame numbers")
            visual = _owned([response_tensor(v, FEATURES, self.host_features)[0]
                             for v in await asyncio.gather(*chunks)])
        finally:
            # On an error: finish reading the stream off the event loop (not one that hangs), and collect the vision
            # calls in flight (each bounded by the deadline).
            if not hung:
                with contextlib.suppress(StepTimeoutError):  # the error in hand is the one to answer
                    await bounded(self.decode, loop.run_in_executor(self.workers, _drain, answers))
            await asyncio.gather(*chunks, return_exceptions=True)
        if visual.shape[0] != len(indices):
            raise StepError(f"{self.vision}: internal error: {visual.shape[0]} frames of features for "
                            f"{len(indices)} frame numbers")
        return VideoFeatures(visual, indices.tolist(), timestamps.tolist(), duration)

    async def logits(self, f: VideoFeatures, instruction: str) -> list[float]:
        inputs = [output_tensor(FEATURES, f.visual[None]), bytes_tensor(INSTRUCTION, [instruction], (1, 1))]
        resp = await self.call(self.grounding, inputs, [LOGITS])
        logits = response_tensor(resp, LOGITS, host=True)  # FP32: numpy where it is in host memory
        return (logits if isinstance(logits, np.ndarray) else logits.float().cpu().numpy()).reshape(-1).tolist()
