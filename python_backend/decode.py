"""`videoitg_decode` (CPU deployments): encoded video bytes -> the sampled frames, SigLIP-ready.

Decoding and sampling are the core package's (`videoitg.decode.decode_video`); a bad video answers that request
with the decoder's typed error while the others in the batch succeed.
"""

from __future__ import annotations

import numpy as np
import torch

from python_backend.common import RequestCounters, error, input_numpy, output_numpy, output_torch, setup
from videoitg.serving.steps import resolve_checkpoint, sampling_from


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        ckpt = resolve_checkpoint(p.get("checkpoint", "default"))
        from videoitg.checkpoint import load_config

        cfg, _ = load_config(ckpt)
        self.image_size = cfg.vision.image_size
        self.sampling = sampling_from(p)
        self.decoder = p.get("decoder", "auto")
        self.counters = RequestCounters("videoitg_decode")
        import videoitg.decode  # noqa: F401 - import PyAV/decoders now, not on the first request
        torch.set_num_threads(1)  # decode instances run side by side; the vision/grounding steps need the cores

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        from videoitg.decode import decode_video

        responses = []
        for request in requests:
            try:
                video = input_numpy(request, "VIDEO")
                data = bytes(video.reshape(-1)[0]) if video is not None and video.size == 1 else b""
                frames = decode_video(data, image_size=self.image_size, params=self.sampling, decoder=self.decoder)
                responses.append(self._respond(frames))
            except Exception as e:  # one bad video must not fail its batch-mates
                responses.append(error(e, "videoitg_decode"))
        return self.counters.count(responses)

    @staticmethod
    def _respond(frames):
        import triton_python_backend_utils as pb_utils

        return pb_utils.InferenceResponse([
            output_torch("PIXEL_VALUES", frames.pixel_values.float()),
            output_numpy("FRAME_INDICES", np.asarray(frames.frame_indices, dtype=np.int64)),
            output_numpy("TIMESTAMPS", np.asarray(frames.timestamps, dtype=np.float64)),
        ])
