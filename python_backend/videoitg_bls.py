"""`videoitg`: the top-level model (BLS). One request = one video + one instruction.

    VIDEO bytes --BLAKE3--> feature cache --hit--------------------------------------+
                                         --miss--> videoitg_decode -> videoitg_vision -+-> videoitg_grounding
    -> selection (core GroundingResult under the request's ranking rule, top-K chronological, moments) -> outputs

On a miss the python decode step streams the frames in chunks (`stream_frames`) and each chunk goes to the vision
step as soon as it arrives, so the tower encodes the first frames while the last ones decode.

BLS rather than an ensemble because a cache hit must skip decode and the vision tower. Each request is served by
its own task and answered through its response sender when it is done, so `execute` returns at once and the next
requests start while a video still decodes. Which requests compute, share, wait or are refused is
`videoitg.serving.scheduling.FeatureScheduler` (a cache hit never waits behind a decode; one computation per video;
at most `max_in_flight` cold videos; failures remembered). Grounding calls that meet reach `videoitg_grounding`
together (it scores each alone). Every request gets exactly one response; a bad one gets its own error.
"""

from __future__ import annotations

import asyncio
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import triton_python_backend_utils as pb_utils
from videoitg.python_backend.common import (
    RequestCounters,
    bytes_tensor,
    error,
    input_error_names,
    input_numpy,
    output_numpy,
    response_tensor,
    setup,
)

from videoitg.errors import InputError, VideoITGError
from videoitg.limits import InFlightGate, OverloadedError
from videoitg.moments import MomentParams
from videoitg.outputs import DEFAULT_RANKING_RULE, GroundingResult
from videoitg.pipeline import VideoFeatures
from videoitg.serving.cache import FailureMemory, FeatureCache, cache_key
from videoitg.serving.scheduling import FeatureScheduler, NotCachedError
from videoitg.serving.steps import (
    Request,
    feature_identity,
    limits_from,
    parse_request,
    result_outputs,
    sampling_from,
)

HITS_PER_COLD_SLOT = 4
NAME = "videoitg"  # default; the instance uses its own model name (benchmarks add variants)


class StepError(VideoITGError):
    """A step model answered with an error; its message already names the step and the cause."""


def _drain(answers) -> None:
    """Read a decoupled step's answers to the end (its iterator would otherwise do so wherever it is freed)."""
    for _ in answers:
        pass



class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.name = args.get("model_name", NAME)
        self.sampling = sampling_from(p)
        self.limits = limits_from(p)  # byte bounds here; the queue bound is Triton's (config.pbtxt)
        self.identity = feature_identity(assets, p)
        self.scheduler = FeatureScheduler(FeatureCache(int(p.get("feature_cache_bytes", 1 << 30))), FailureMemory(),
                                          self.limits.max_in_flight, on_change=self._update_metrics)
        # Requests being served at once: room for hits (which hold little but their upload) while every cold slot is
        # busy, so a hit is neither queued nor refused behind slow decodes.
        self.request_gate = InFlightGate(HITS_PER_COLD_SLOT * self.limits.max_in_flight)
        self.tasks: set[asyncio.Task] = set()  # one per request being served (kept: the loop holds weak refs)
        self.default_top_k = int(p.get("default_top_k", 32))
        self.ranking_rule = p.get("ranking_rule") or DEFAULT_RANKING_RULE
        self.moment_params = MomentParams.from_mapping(p)
        self.decode_model = p.get("decode_model", "videoitg_decode")
        self.vision_model = p.get("vision_model", "videoitg_vision")
        self.grounding_model = p.get("grounding_model", "videoitg_grounding")
        self.decode_backend = p.get("decode_backend", "python")
        self.streaming = self.decode_backend == "python" and int(p.get("stream_frames", 0)) > 0
        # A streamed answer is read by blocking calls (they release the GIL): one thread per cold video.
        self.stream_readers = ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-stream")
        self._metrics()
        self.counters = RequestCounters(self.name)
        self.client_errors = input_error_names()

    def _metrics(self) -> None:
        # Custom metrics appear on Triton's /metrics endpoint next to nv_inference_request_success/failure.
        # The families must outlive their metrics, so both are kept on the model.
        fam = pb_utils.MetricFamily
        self.families = [
            fam("videoitg_feature_cache_hits", "visual-feature cache hits", fam.COUNTER),
            fam("videoitg_feature_cache_misses", "visual-feature cache misses", fam.COUNTER),
            fam("videoitg_feature_cache_bytes", "bytes held by the visual-feature cache", fam.GAUGE),
            # The load signal (autoscaling): requests this model is serving. Triton's own pending count stays near
            # zero because execute hands each request to a task at once.
            fam("videoitg_requests_in_flight", "requests being served (cold or cache hit)", fam.GAUGE),
            fam("videoitg_cold_videos_in_flight", "videos being decoded and encoded", fam.GAUGE),
        ]
        self.m_hit, self.m_miss, self.m_bytes, self.m_requests, self.m_cold = (
            f.Metric({"model": self.name}) for f in self.families)

    def _update_metrics(self, hit: bool | None) -> None:
        if hit is not None:
            (self.m_hit if hit else self.m_miss).increment(1)
        self.m_cold.set(self.scheduler.cold.in_flight)
        self.m_bytes.set(self.scheduler.cache.stats.bytes)

    def finalize(self):
        # Metrics before their families, explicitly: interpreter teardown order is arbitrary, and a family
        # destroyed before its metrics crashes the stub on exit.
        self.counters.close()
        self.stream_readers.shutdown(wait=False, cancel_futures=True)
        del self.m_hit, self.m_miss, self.m_bytes, self.m_requests, self.m_cold
        del self.families

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        for r in requests:
            sender = r.get_response_sender()
            try:
                req = parse_request(input_numpy(r, "VIDEO"), input_numpy(r, "INSTRUCTION"),
                                    input_numpy(r, "TOP_K"), self.default_top_k, self.limits,
                                    input_numpy(r, "RANKING_RULE"), self.ranking_rule, input_numpy(r, "VIDEO_DIGEST"))
                key = cache_key(req.video_digest(), self.sampling.key(), self.identity)
                self.request_gate.__enter__()  # OverloadedError past the bound
            except Exception as e:
                self._send(sender, self._error(e))
                continue
            self.m_requests.set(self.request_gate.in_flight)
            task = loop.create_task(self._serve(req, key, sender))
            self.tasks.add(task)
            task.add_done_callback(self._done)
        return None  # every response goes through its request's sender

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        self.request_gate.__exit__(None, None, None)
        self.m_requests.set(self.request_gate.in_flight)

    async def _serve(self, req: Request, key: str, sender) -> None:
        try:
            video = req.video
            compute = None if video is None else (lambda: self._visual(video))  # None: named by digest alone
            f, hit = await self.scheduler.features(key, compute, self._client_fault)
            logits = await self._ground(f, req.instruction)
            result = GroundingResult(logits.tolist(), f.frame_indices, f.timestamps, req.instruction,
                                     ranking_rule=req.ranking_rule)
            response = self._respond(result, req, hit, self.moment_params)
        except Exception as e:
            response = self._error(e)
        self._send(sender, response)

    def _send(self, sender, response) -> None:
        self.counters.count([response])
        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    async def _call(self, model: str, inputs: list, outputs: list[str]):
        resp = await pb_utils.InferenceRequest(
            model_name=model, inputs=inputs, requested_output_names=outputs
        ).async_exec()
        if resp.has_error():
            raise StepError(resp.error().message())
        return resp

    async def _visual(self, video: bytes) -> VideoFeatures:
        if self.decode_backend == "dali":
            return await self._visual_dali(video)
        if self.streaming:
            return await self._visual_streamed(video)
        # Steps take one video per request, with a batch axis of 1.
        dec = await self._call(self.decode_model, [bytes_tensor("VIDEO", [video], (1, 1))],
                               ["PIXEL_VALUES", "FRAME_INDICES", "TIMESTAMPS"])
        pixels = pb_utils.get_output_tensor_by_name(dec, "PIXEL_VALUES")
        vis = await self._call(self.vision_model, [pixels], ["FEATURES"])
        # Clone: the response tensor lives in the python backend's shared-memory pool, the cache may keep it long.
        visual = response_tensor(vis, "FEATURES")[0].clone()
        return VideoFeatures(visual,
                             pb_utils.get_output_tensor_by_name(dec, "FRAME_INDICES").as_numpy().reshape(-1).tolist(),
                             pb_utils.get_output_tensor_by_name(dec, "TIMESTAMPS").as_numpy().reshape(-1).tolist())

    async def _visual_streamed(self, video: bytes) -> VideoFeatures:
        """Each chunk of frames the decode step streams goes to the vision step at once (with the video's frame
        count, which sets the projector's grid); the frame numbers come last."""
        loop = asyncio.get_running_loop()
        answers = await pb_utils.InferenceRequest(
            model_name=self.decode_model, inputs=[bytes_tensor("VIDEO", [video], (1, 1))],
            requested_output_names=["PIXEL_VALUES", "NUM_FRAMES", "FRAME_INDICES", "TIMESTAMPS"],
        ).async_exec(decoupled=True)
        chunks: list[asyncio.Task] = []
        indices = timestamps = None
        try:
            while (dec := await loop.run_in_executor(self.stream_readers, next, answers, None)) is not None:
                if dec.has_error():
                    raise StepError(dec.error().message())
                pixels = pb_utils.get_output_tensor_by_name(dec, "PIXEL_VALUES")
                if pixels is not None:
                    num_frames = pb_utils.get_output_tensor_by_name(dec, "NUM_FRAMES")
                    chunks.append(loop.create_task(self._call(self.vision_model, [pixels, num_frames],
                                                              ["FEATURES"])))
                frame_numbers = pb_utils.get_output_tensor_by_name(dec, "FRAME_INDICES")
                if frame_numbers is not None:  # the last answer
                    indices = frame_numbers.as_numpy().reshape(-1)
                    timestamps = pb_utils.get_output_tensor_by_name(dec, "TIMESTAMPS").as_numpy().reshape(-1)
            if indices is None or not chunks:
                raise StepError(f"{self.decode_model}: internal error: the stream ended without "
                                f"{'frames' if not chunks else 'frame numbers'}")
            # torch.cat copies out of the responses' shared memory: the cache may keep the features long.
            visual = torch.cat([response_tensor(v, "FEATURES")[0] for v in await asyncio.gather(*chunks)])
        finally:
            # On an error: finish reading the stream off the event loop, and collect the vision calls in flight.
            await loop.run_in_executor(self.stream_readers, _drain, answers)
            await asyncio.gather(*chunks, return_exceptions=True)
        if visual.shape[0] != len(indices):
            raise StepError(f"{self.vision_model}: internal error: {visual.shape[0]} frames of features for "
                            f"{len(indices)} frame numbers")
        return VideoFeatures(visual, indices.tolist(), timestamps.tolist())

    async def _visual_dali(self, video: bytes) -> VideoFeatures:
        """GPU deployments: the container says which frames to sample (`plan_decode`, after every check the CPU
        decoder makes before decoding, decode work included: DALI has no limits of its own), DALI decodes just
        those on the GPU, and the frames reach the vision model by DLPack without leaving the device."""
        from torch.utils.dlpack import to_dlpack

        from videoitg.decode import plan_decode
        from videoitg.decode.dali_backend import colour_input
        from videoitg.decode.pyav_backend import apply_rotation

        plan = plan_decode(video, params=self.sampling, limits=self.limits.decode,
                           time_budget_s=self.limits.decode_time_budget_s)
        data = np.frombuffer(video, dtype=np.uint8)[None]
        dec = await self._call(self.decode_model, [pb_utils.Tensor("VIDEO", data),
                                                   pb_utils.Tensor("FRAMES", np.asarray([plan.frame_indices],
                                                                                        dtype=np.int32)),
                                                   pb_utils.Tensor("COLOUR", colour_input(plan.colour)[None])],
                               ["PIXEL_VALUES"])
        # Drop DALI's batch axis (still on the device) and turn the frames upright as the CPU decoder does.
        pixels = apply_rotation(response_tensor(dec, "PIXEL_VALUES")[0], plan.rotation)[None].contiguous()
        vis = await self._call(self.vision_model, [pb_utils.Tensor.from_dlpack("PIXEL_VALUES", to_dlpack(pixels))],
                               ["FEATURES"])
        return VideoFeatures(response_tensor(vis, "FEATURES")[0].clone(), plan.frame_indices, plan.timestamps)

    async def _ground(self, f: VideoFeatures, instruction: str) -> np.ndarray:
        from torch.utils.dlpack import to_dlpack

        inputs = [pb_utils.Tensor.from_dlpack("FEATURES", to_dlpack(f.visual[None].contiguous())),
                  bytes_tensor("INSTRUCTION", [instruction], (1, 1))]
        resp = await self._call(self.grounding_model, inputs, ["LOGITS"])
        return response_tensor(resp, "LOGITS").reshape(-1).float().cpu().numpy()

    def _client_fault(self, e: BaseException) -> bool:
        """Our input errors, also when a step raised them: a BLS response does not carry the step's error code
        through (2.51 reports INTERNAL), but the step's message names the error class."""
        if isinstance(e, StepError):
            m = re.match(r"^\w+: (\w+): ", str(e))
            return m is not None and m.group(1) in self.client_errors
        return isinstance(e, InputError)

    def _error(self, e: BaseException):
        if isinstance(e, NotCachedError):
            code = pb_utils.TritonError.NOT_FOUND  # the protocol's next step: send the bytes
        elif isinstance(e, OverloadedError):
            code = pb_utils.TritonError.UNAVAILABLE  # not the client's input: retry later, or elsewhere
        elif not isinstance(e, StepError):
            return error(e, self.name)
        else:
            code = pb_utils.TritonError.INVALID_ARG if self._client_fault(e) else pb_utils.TritonError.INTERNAL
        message = str(e) if isinstance(e, StepError) else f"{self.name}: {type(e).__name__}: {e}"
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))

    @staticmethod
    def _respond(result: GroundingResult, req: Request, cache_hit: bool, moment_params: MomentParams):
        out = result_outputs(result, req.top_k, moment_params, cache_hit)
        return pb_utils.InferenceResponse([output_numpy(k, v[None]) for k, v in out.items()])  # the batch axis
