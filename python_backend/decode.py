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

from videoitg.errors import InputError
from videoitg.serving.steps import limits_from, sampling_from


class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.image_size = assets.config().vision.image_size
        self.sampling = sampling_from(p)
        self.limits = limits_from(p)
        self.limits.check_sampling(self.sampling)
        self.counters = RequestCounters("videoitg_decode")
        import videoitg.decode  # noqa: F401 - import PyAV/decoders now, not on the first request
        torch.set_num_threads(1)  # decode instances run side by side; the vision/grounding steps need the cores

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        from videoitg.decode import decode_video

        def handle(request):
            video = input_numpy(request, "VIDEO")
            if video is None or video.size != 1:
                raise InputError("VIDEO must hold one encoded video")
            data = bytes(video.reshape(-1)[0])
            return self._respond(decode_video(data, image_size=self.image_size, params=self.sampling,
                                              limits=self.limits.decode,
                                              time_budget_s=self.limits.decode_time_budget_s, output="uint8"))

        return self.counters.count(respond_each(requests, handle, "videoitg_decode"))

    @staticmethod
    def _respond(frames):
        import triton_python_backend_utils as pb_utils

        return pb_utils.InferenceResponse([  # one video: a batch axis of 1
            output_torch("PIXEL_VALUES", frames.pixel_values[None]),  # uint8 [1, T, 3, S, S]
            output_numpy("FRAME_INDICES", np.asarray([frames.frame_indices], dtype=np.int64)),
            output_numpy("TIMESTAMPS", np.asarray([frames.timestamps], dtype=np.float64)),
        ])
