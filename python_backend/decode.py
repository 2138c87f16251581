"""`videoitg_decode`: a video (VIDEO bytes, or VIDEO_URI under a media root) -> its sampled frames, resized, in
one answer or streamed in chunks (`step_decoder`). PyAV's frames are numpy arrays: this step loads torch only with
DALI or PyNvVideoCodec."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import triton_python_backend_utils as pb_utils

from videoitg.admission import InFlightGate, OverloadedError
from videoitg.contract.parameters import DecodeParameters
from videoitg.contract.protocol import DECODE
from videoitg.decode.heap import trim_freed_memory
from videoitg.decode.pool import share_cores

from .metrics import DecodeTimes, RequestCounters, finalized
from .params import StepAssets, instance_processes, setup, step_device
from .references import decode_source
from .requester import Requester, abandoned, cancelled
from .responses import error, respond_each
from .step_decoder import StepDecoder, decode_stream, decode_whole
from .tensors import output_tensor, request_inputs


class TritonPythonModel:
    """Decodes with the repository's decoder (`step_decoder.StepDecoder`): PyAV, or DALI or PyNvVideoCodec in this
    process (NVDEC on a KIND_GPU instance, through the process's decode pool), whose self-test at load fails the
    server's start in one line when it cannot run here. Decoupled (the BLS repository): one answer per
    `stream_frames` decoded frames, the frame numbers last, so the vision step encodes a video's first frames during
    its decode; else one answer with every frame. A pooled (NVDEC) step streams up to max_in_flight videos at once,
    each from its own thread, their pieces sharing the card's NVDEC sessions; PyAV one video at a time (each decode
    uses every core)."""

    def initialize(self, args: dict[str, Any]) -> None:
        self.name = args.get("model_name", DECODE)  # as Triton knows it: its errors name it so (`errors.step_error`)
        p = setup(args, DecodeParameters)
        assets = StepAssets.of_model(args, p)
        self.image_size = assets.config().vision.image_size
        self.sampling = p.sampling
        self.limits = p.limits
        self.limits.check_sampling(self.sampling)
        self.media_roots = p.media_roots
        self.streaming = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.stream_frames = p.stream_frames
        self.decoder = StepDecoder.of(p.decoder, step_device(p.device, args))
        # each instance is a process with its own decode pool: its PyAV overflow threads take its share of the cores
        # (Triton lists a KIND_GPU group's GPUs in the config it passes)
        share_cores(instance_processes(args["model_config"], gpus=1))
        if self.decoder.self_test is not None:
            import torch

            from videoitg.decode.selftest import self_test

            torch.set_num_threads(1)  # decode instances run side by side; the vision/grounding steps need the cores
            self_test(device=self.decoder.self_test, device_id=self.decoder.device_id())  # one line on failure
        self.videos = ThreadPoolExecutor(self.limits.max_in_flight, thread_name_prefix="videoitg-decode-request") \
            if self.streaming and self.decoder.pooled else None
        # the pooled step returns from `execute` at once: its own gate refuses a video past max_in_flight at once
        # (OverloadedError), never queued with its bytes
        self.gate = InFlightGate(self.limits.max_in_flight) if self.videos is not None else None
        self.counters = RequestCounters(DECODE)
        self.times = DecodeTimes(self.name) if self.videos is not None else None  # outside tritonserver's statistics

    def finalize(self) -> None:
        if self.videos is not None:  # admitted videos go on and answer, uncounted (a send may block: never waited on)
            self.videos.shutdown(wait=False)
        finalized(self.counters, *([self.times] if self.times is not None else []))

    def execute(self, requests: list[Any]) -> list[Any] | None:
        if self.streaming:
            for request in requests:
                if self.videos is not None and self.gate is not None:  # videos share the decode pool; each answers
                    try:
                        self.gate.admit()
                    except OverloadedError as e:
                        sender = request.get_response_sender()
                        self.counters.count([response := error(e, self.name)])
                        sender.send(response, flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
                        continue
                    self.videos.submit(self._admitted, request, time.monotonic())
                else:  # one video at a time per instance, as unstreamed
                    self._stream(request)
            return None
        try:  # a request cancelled while it waited for the step is never decoded
            waited = [request.is_cancelled() for request in requests]
            answers = iter(self.counters.count(respond_each(
                [r for r, gone in zip(requests, waited, strict=True) if not gone], self._decode, self.name)))
            return [cancelled(self.name) if gone else next(answers) for gone in waited]
        finally:
            trim_freed_memory()

    def _admitted(self, request: Any, handed: float) -> None:
        start = time.monotonic()
        try:
            self._stream(request)
        except Exception as e:  # _stream answers every request itself; this is what it could not
            pb_utils.Logger.log_error(f"{self.name}: a streamed decode failed without an answer: {e!r}")
        finally:
            self.times.add(start - handed, time.monotonic() - start)
            self.gate.release()

    def _decode(self, request: Any) -> Any:
        with self._video(request) as video:
            return self._response(decode_whole(video, self.image_size, self.sampling, self.limits, self.decoder))

    def _stream(self, request: Any) -> None:
        sender = request.get_response_sender()
        requester = Requester(request, sender)  # before the decode and each answer: may it still be sent?
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        if abandoned(requester, sender, self.name):
            return  # cancelled (or its requester gone) while it waited for the step: never decoded
        try:
            pending = None  # each answer is sent once the next exists, so the last one carries the final flag
            with self._video(request) as video:
                for out in decode_stream(video, self.image_size, self.sampling, self.limits, self.stream_frames,
                                         self.decoder):
                    if pending is not None:
                        if abandoned(requester, sender, self.name):
                            return  # the decode ends here
                        sender.send(pending)
                    pending = self._response(out)
            response = pending
        except Exception as e:
            response = error(e, self.name)
        if abandoned(requester, sender, self.name):
            return
        self.counters.count([response])
        sender.send(response, flags=final)
        trim_freed_memory()  # once answered: what the decode freed goes back to the system (`heap`)

    def _video(self, request: Any) -> contextlib.AbstractContextManager[bytes | Path]:
        return decode_source(request_inputs(request), self.media_roots)

    @staticmethod
    def _response(outputs: dict[str, Any]) -> Any:
        return pb_utils.InferenceResponse([output_tensor(k, v) for k, v in outputs.items()])
