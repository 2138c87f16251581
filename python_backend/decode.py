"""`videoitg_decode` (CPU decoding): encoded video bytes, or a file under a media root (VIDEO_URI, checked here
too: `steps.decode_source`) -> the sampled frames, resized, uint8 (a quarter of the bytes of float pixel values
through shared memory; the vision step normalises them).

Decoding and sampling are the core package's (`videoitg.decode`), under the deployment's `DecodeLimits` and
decode time budget (model parameters, `videoitg.limits.Limits`); a bad or over-limit video answers that request
with the decoder's typed error while the others in the batch succeed.

The decoder is the repository's (`RepoSpec.decoder`, the `decoder` parameter, `steps.StepDecoder`): PyAV
("python"), or DALI through its Python API in this process ("dali": NVDEC on the GPU Triton gave a KIND_GPU
instance, DALI's CPU decoder on a KIND_CPU one), with the same checks, sampling and outputs
(`videoitg.decode.decode_video`); DALI's frames are float32 SigLIP pixel values. A dali step decodes the package's
self-test clip at load (`dali_backend.self_test`): a decoder that cannot run here fails the model's load, and so the
server's start, in one line ending "serve with --decoder python".

Two answer shapes, set by the repository (`RepoSpec.stream_frames`, python decoder only):
- streaming (decoupled; the BLS repository): `steps.decode_stream`, one response per `stream_frames` decoded frames
  while the rest decode, the frame numbers last, so the vision step encodes a video's first frames during its
  decode;
- one response with every frame (the ensemble, whose steps answer once).
"""

from __future__ import annotations

import json

import torch
import triton_python_backend_utils as pb_utils
from videoitg.python_backend.common import (
    RequestCounters,
    error,
    input_numpy,
    output_numpy,
    output_torch,
    respond_each,
    setup,
)
from videoitg.python_backend.steps import StepDecoder, decode_source, decode_stream, decode_whole, sampling_from

from videoitg.engines.runtimes import instance_device
from videoitg.limits import Limits
from videoitg.paths import MediaRoots

NAME = "videoitg_decode"


class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.image_size = assets.config().vision.image_size
        self.sampling = sampling_from(p)
        self.limits = Limits.from_mapping(p)
        self.limits.check_sampling(self.sampling)
        self.media_roots = MediaRoots.from_parameter(p.get("media_roots"))
        self.streaming = pb_utils.using_decoupled_model_transaction_policy(json.loads(args["model_config"]))
        self.stream_frames = int(p.get("stream_frames", 64))
        self.decoder = StepDecoder.of(p.get("decoder", "python"), instance_device(args, p.get("device", "cpu")))
        import videoitg.decode  # noqa: F401 - import PyAV/decoders now, not on the first request
        torch.set_num_threads(1)  # decode instances run side by side; the vision/grounding steps need the cores
        if self.decoder.dali_device is not None:
            from videoitg.decode.dali_backend import self_test

            self_test(device=self.decoder.dali_device, device_id=self.decoder.device_id())  # one line on failure
        self.counters = RequestCounters(NAME)

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        if self.streaming:
            for request in requests:  # one video at a time per instance, as unstreamed
                self._stream(request)
            return None
        return self.counters.count(respond_each(requests, self._decode, NAME))

    def _decode(self, request):
        with self._video(request) as video:
            return self._response(decode_whole(video, self.image_size, self.sampling, self.limits, self.decoder))

    def _stream(self, request):
        sender = request.get_response_sender()
        final = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
        try:
            pending = None  # each answer is sent once the next exists, so the last one carries the final flag
            with self._video(request) as video:
                for out in decode_stream(video, self.image_size, self.sampling, self.limits, self.stream_frames):
                    if pending is not None:
                        sender.send(pending)
                    pending = self._response(out)
            response = pending
        except Exception as e:
            response = error(e, NAME)
        self.counters.count([response])
        sender.send(response, flags=final)

    def _video(self, request):
        return decode_source(input_numpy(request, "VIDEO"), input_numpy(request, "VIDEO_URI"),
                             input_numpy(request, "VIDEO_VERSION"), self.media_roots)

    @staticmethod
    def _response(outputs: dict):
        return pb_utils.InferenceResponse([output_torch(k, v) if isinstance(v, torch.Tensor) else output_numpy(k, v)
                                           for k, v in outputs.items()])
