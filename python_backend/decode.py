"""`videoitg_decode` (CPU deployments): encoded video bytes -> the sampled frames, resized, uint8 (a quarter of the
bytes of float pixel values through shared memory; the vision step normalises them).

Decoding and sampling are the core package's (`videoitg.decode.decode_video`), under the deployment's
`DecodeLimits` and decode time budget (model parameters, `videoitg.limits.Limits`); a bad or over-limit video
answers that request with the decoder's typed error while the others in the batch succeed.
"""

from __future__ import annotations

import numpy as np
import torch
from videoitg.python_backend.common import RequestCounters, input_numpy, output_numpy, output_torch, respond_each, setup

from videoitg.serving.steps import limits_from, resolve_checkpoint, sampling_from


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        ckpt = resolve_checkpoint(p.get("checkpoint", "default"))
        from videoitg.checkpoint import load_config

        cfg, _ = load_config(ckpt)
        self.image_size = cfg.vision.image_size
        self.sampling = sampling_from(p)
        self.limits = limits_from(p)
        self.limits.check_sampling(self.sampling)
        self.decoder = p.get("decoder", "auto")
        self.counters = RequestCounters("videoitg_decode")
        import videoitg.decode  # noqa: F401 - import PyAV/decoders now, not on the first request
        torch.set_num_threads(1)  # decode instances run side by side; the vision/grounding steps need the cores

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        from videoitg.decode import decode_video

        def handle(request):
            video = input_numpy(request, "VIDEO")
            data = bytes(video.reshape(-1)[0]) if video is not None and video.size == 1 else b""
            return self._respond(decode_video(data, image_size=self.image_size, params=self.sampling,
                                              decoder=self.decoder, limits=self.limits.decode,
                                              time_budget_s=self.limits.decode_time_budget_s, output="uint8"))

        return self.counters.count(respond_each(requests, handle, "videoitg_decode"))

    @staticmethod
    def _respond(frames):
        import triton_python_backend_utils as pb_utils

        return pb_utils.InferenceResponse([
            output_torch("PIXEL_VALUES", frames.pixel_values),  # uint8 [T, 3, S, S]
            output_numpy("FRAME_INDICES", np.asarray(frames.frame_indices, dtype=np.int64)),
            output_numpy("TIMESTAMPS", np.asarray(frames.timestamps, dtype=np.float64)),
        ])
