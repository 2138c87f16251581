"""`videoitg`: the top-level model (BLS). One request = one video + one instruction.

    VIDEO bytes / VIDEO_URI file --BLAKE3--> feature cache --hit-----------------------------------------+
                                                           --miss--> videoitg_decode -> videoitg_vision -+
    -> videoitg_grounding
    -> selection (GroundingResult under the request's ranking rule, top-K chronological, moments) -> outputs
    (+ the top-K frames as images when the request asks: `frames.py`, decoded in a thread pool of their own)

BLS rather than an ensemble because a cache hit must skip decode and the vision tower. `execute` hands each request
to its own task and returns, so the next requests start while a video still decodes; each task answers through its
request's response sender. Which requests compute, share, wait or are refused is `scheduling.FeatureScheduler`;
how the steps are called is `features.Steps`; the request checks are `steps.parse_request`.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import triton_python_backend_utils as pb_utils
from videoitg.python_backend.cache import FailureMemory, FeatureCache, cache_key
from videoitg.python_backend.common import BlsMetrics, RequestCounters, error, input_numpy, output_numpy, setup
from videoitg.python_backend.errors import remember_verdict
from videoitg.python_backend.features import Steps
from videoitg.python_backend.frames import FrameRequest, parse_frames, served_frames
from videoitg.python_backend.scheduling import FeatureScheduler
from videoitg.python_backend.steps import Request, feature_identity, parse_request, read_reference, sampling_from

from videoitg.limits import InFlightGate, Limits
from videoitg.outputs import GroundingResult, SelectionOptions, result_outputs
from videoitg.paths import MediaRoots

HITS_PER_COLD_SLOT = 4  # requests served at once per cold slot: hits are neither queued nor refused behind decodes


class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.name = args.get("model_name", "videoitg")
        self.limits = Limits.from_mapping(p)  # byte bounds here; the queue bound is Triton's (config.pbtxt)
        self.sampling = sampling_from(p)
        self.media_roots = MediaRoots.from_parameter(p.get("media_roots"))
        self.identity = feature_identity(assets, p)
        self.metrics = BlsMetrics(self.name)
        self.scheduler = FeatureScheduler(FeatureCache(int(p.get("feature_cache_bytes", 1 << 30))), FailureMemory(),
                                          self.limits.max_in_flight, on_change=self._on_change)
        self.gate = InFlightGate(HITS_PER_COLD_SLOT * self.limits.max_in_flight)
        self.tasks: set[asyncio.Task] = set()  # one per request being served (kept: the loop holds weak refs)
        self.selection = SelectionOptions.from_parameters(p)
        backend = p.get("decode_backend", "python")
        self.steps = Steps(p.get("decode_model", "videoitg_decode"), p.get("vision_model", "videoitg_vision"),
                           p.get("grounding_model", "videoitg_grounding"), backend,
                           backend == "python" and int(p.get("stream_frames", 0)) > 0, self.sampling, self.limits,
                           ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-cold"))
        # Frames a request asks for (FRAMES) decode here, off the event loop and apart from the cold videos.
        self.frame_workers = ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-frames")
        self.counters = RequestCounters(self.name)

    def finalize(self):
        self.counters.close()
        self.metrics.close()
        self.steps.workers.shutdown(wait=False, cancel_futures=True)
        self.frame_workers.shutdown(wait=False, cancel_futures=True)

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        for r in requests:
            sender = r.get_response_sender()
            try:
                sel = self.selection
                req = parse_request(input_numpy(r, "VIDEO"), input_numpy(r, "INSTRUCTION"),
                                    input_numpy(r, "TOP_K"), sel.default_top_k, self.limits,
                                    input_numpy(r, "RANKING_RULE"), sel.ranking_rule, input_numpy(r, "VIDEO_DIGEST"),
                                    input_numpy(r, "VIDEO_URI"), self.media_roots)
                frames = parse_frames(input_numpy(r, "FRAMES"), input_numpy(r, "FRAMES_SIZE"), req.video is not None)
                # A reference is hashed in its task, off the event loop (a long video takes seconds).
                key = None if req.reference else cache_key(req.video_digest(), self.sampling.key(), self.identity)
                self.gate.__enter__()  # OverloadedError past the bound
            except Exception as e:
                self._send(sender, None, e)
                continue
            self.metrics.requests.set(self.gate.in_flight)
            task = loop.create_task(self._serve(req, key, sender, frames))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return None  # every response goes through its request's sender

    async def _serve(self, req: Request, key: str | None, sender, frames: FrameRequest | None = None) -> None:
        try:
            response, exc = await self._answer(req, key, frames), None
        except Exception as e:
            response, exc = None, e
        finally:  # before the answer goes out: a client that has it sees the load gauges without its request
            self.gate.__exit__(None, None, None)
            self.metrics.requests.set(self.gate.in_flight)
        self._send(sender, response, exc)

    async def _answer(self, req: Request, key: str | None, frames: FrameRequest | None = None):
        video = req.video
        if req.reference is not None:  # keyed by the content read now: a file replaced under its name is new
            video = await asyncio.get_running_loop().run_in_executor(
                None, read_reference, self.media_roots, req.reference, self.limits)
            key = cache_key(video.digest, self.sampling.key(), self.identity)
        assert key is not None
        compute = None if video is None else (lambda: self.steps.visual(video))  # None: named by digest alone
        f, hit = await self.scheduler.features(key, compute, remember_verdict)
        logits = await self.steps.logits(f, req.instruction)
        result = GroundingResult(logits, f.frame_indices, f.timestamps, req.instruction, ranking_rule=req.ranking_rule,
                                 duration=f.duration)
        out = result_outputs(result, req.top_k, self.selection.moment_params, hit)
        if frames is not None:
            out |= await asyncio.get_running_loop().run_in_executor(
                self.frame_workers, served_frames, req.video, result, req.top_k, frames, self.limits)
        return pb_utils.InferenceResponse([output_numpy(k, v[None]) for k, v in out.items()])  # batch axis

    def _send(self, sender, response, exc: BaseException | None) -> None:
        self.counters.record(exc)
        sender.send(error(exc, self.name) if exc is not None else response,
                    flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)

    def _on_change(self, hit: bool | None) -> None:
        self.metrics.update(hit, self.scheduler.cold.in_flight, self.scheduler.cache.stats.bytes)

