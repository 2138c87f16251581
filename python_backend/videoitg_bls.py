"""`videoitg`, the top-level model (BLS): one video + one instruction -> the selected frames and moments, through
the feature cache, then the decode, vision and grounding steps."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import triton_python_backend_utils as pb_utils

from videoitg.admission import OverloadedError, WaitingGate
from videoitg.contract.parameters import TopParameters
from videoitg.contract.protocol import TOP
from videoitg.contract.tensors import result_outputs
from videoitg.outputs import GroundingResult

from .cache import FailureMemory, FeatureCache, cache_key
from .errors import STEP_WAIT_S, remember_verdict
from .frames import check_frames, served_frames
from .metrics import BlsMetrics, RequestCounters, damage_metric, finalized
from .params import StepAssets, feature_identity, host_features, setup
from .references import read_reference
from .request import Request, parse_request
from .responses import error
from .scheduling import COLD_WAIT_S, FeatureScheduler
from .steps import DEADLINE, Steps
from .tensors import output_numpy, request_inputs

# Past `Limits.requests_at_once` a request waits in a line, first come first served, up to ADMIT_WAIT_S (as a new
# video waits for a cold slot): a repair's few seconds of arrivals are answered late, not refused into retries that
# come back with the next arrivals. The line holds at most WAITING_PER_SLOT requests a slot, and the video bytes of
# max_in_flight of the largest; past either, a request is refused at once.
WAITING_PER_SLOT = 8
ADMIT_WAIT_S = COLD_WAIT_S


class TritonPythonModel:
    """BLS rather than an ensemble: a cache hit skips the decode and the vision tower. `execute` hands each request
    to its own task and returns, so the next requests start while a video still decodes; each task answers through
    its request's response sender."""

    def initialize(self, args: dict[str, Any]) -> None:
        p = setup(args, TopParameters)
        assets = StepAssets.of_model(args, p, p.engines)
        self.name = args.get("model_name", TOP)
        self.limits = p.limits  # its admission's bounds (`gate`) and byte bounds
        self.sampling = p.sampling
        self.media_roots = p.media_roots
        self.identity = feature_identity(assets, p)  # the repository's pinned identity, else the files' now
        self.damage = damage_metric(self.name)  # digest-cache damage found while the identity was taken from files
        self.metrics = BlsMetrics(self.name)
        self.scheduler = FeatureScheduler(FeatureCache(p.feature_cache_bytes), FailureMemory(),
                                          self.limits.max_in_flight, on_change=self._on_change)
        slots = self.limits.requests_at_once
        self.gate = WaitingGate(slots, max_waiting=WAITING_PER_SLOT * slots,
                                max_waiting_bytes=self.limits.max_in_flight * self.limits.decode.max_bytes,
                                on_wait=self.metrics.waiting.set)
        self.tasks: set[asyncio.Task] = set()  # one per request being served (kept: the loop holds weak refs)
        self.selection = p.selection
        cold = ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-cold")
        self.steps = Steps(p.decode_model, p.vision_model, p.grounding_model, p.decoder, p.streaming, self.sampling,
                           self.limits, cold, host_features(p))
        # Frames a request asks for (FRAMES) decode here, off the event loop and apart from the cold videos.
        self.frame_workers = ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-frames")
        self.counters = RequestCounters(self.name)

    def finalize(self) -> None:
        self.steps.workers.shutdown(wait=False, cancel_futures=True)
        self.frame_workers.shutdown(wait=False, cancel_futures=True)
        finalized(self.counters, self.metrics, self.damage)

    async def execute(self, requests: list[Any]) -> None:
        loop = asyncio.get_running_loop()
        for r in requests:
            sender = r.get_response_sender()
            try:
                inputs = request_inputs(r)
                req = parse_request(inputs, self.selection, self.limits, self.media_roots)
                check_frames(req.options, req.video is not None or req.reference is not None)
                # A reference is hashed in its task, off the event loop (a long video takes seconds).
                key = None if req.reference else cache_key(req.video_digest(), self.sampling.key(), self.identity)
            except Exception as e:
                self._send(sender, None, e)
                continue
            task = loop.create_task(self._serve(req, key, sender))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return None  # every response goes through its request's sender

    async def _serve(self, req: Request, key: str | None, sender: Any) -> None:
        try:  # a slot, at once or within ADMIT_WAIT_S in a bounded line; OverloadedError past it
            await self.gate.enter(ADMIT_WAIT_S, len(req.video) if req.video is not None else 0)
        except OverloadedError as e:
            self._send(sender, None, e)
            return
        self.metrics.requests.set(self.gate.in_flight)
        # Every wait for a step ends by this request's deadline, with an error naming the step (`steps.bounded`).
        DEADLINE.set(asyncio.get_running_loop().time() + STEP_WAIT_S)
        try:
            response, exc = await self._answer(req, key), None
        except Exception as e:
            response, exc = None, e
        finally:  # before the answer goes out: a client that has it sees the load gauges without its request
            await self.gate.leave()
            self.metrics.requests.set(self.gate.in_flight)
        self._send(sender, response, exc)

    async def _answer(self, req: Request, key: str | None) -> Any:
        video = req.video
        if req.reference is not None:  # keyed by the content read now: a file replaced under its name is new
            video = await asyncio.get_running_loop().run_in_executor(
                None, read_reference, self.media_roots, req.reference, self.limits)
            key = cache_key(video.digest, self.sampling.key(), self.identity)
        assert key is not None
        compute = None if video is None else (lambda: self.steps.visual(video))  # None: named by digest alone
        f, hit = await self.scheduler.features(key, compute, remember_verdict)
        logits = await self.steps.logits(f, req.instruction)
        options = req.options
        result = GroundingResult(logits, f.frame_indices, f.timestamps, req.instruction,
                                 ranking_rule=options.ranking_rule, duration=f.duration)
        out = result_outputs(result, options, self.selection.moment_params, hit)
        if options.frames is not None:
            out |= await asyncio.get_running_loop().run_in_executor(
                self.frame_workers, served_frames, video, result, options, self.limits, self.media_roots)
        return pb_utils.InferenceResponse([output_numpy(k, v[None]) for k, v in out.items()])  # batch axis

    def _send(self, sender: Any, response: Any, exc: BaseException | None) -> None:
        self.counters.record(exc)
        sender.send(error(exc, self.name) if exc is not None else response,
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _on_change(self, hit: bool | None) -> None:
        stats = self.scheduler.cache.stats
        self.metrics.update(hit, self.scheduler.cold.in_flight, stats.bytes, stats.entries)

