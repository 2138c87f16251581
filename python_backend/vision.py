"""`videoitg_vision`: frames [T, 3, S, S] (uint8 from the python decoder, or SigLIP pixel values from DALI) ->
projected visual features [T, hw², H]. With NUM_FRAMES the frames are one chunk of a video of that many frames
(the streaming decode step's chunks): the projector's grid is the whole video's, so the chunks' features
concatenated are the whole video's.

The encoder runs on the runtime the repository generator chose from the engines directory (`vision_runtime`:
torch, onnxruntime or tensorrt; `videoitg.engines.runtimes.open_vision` checks the engine's manifest against this
checkpoint); the projector is always the core model's. The `videoitg_step_runtime` metric says which one answers.
A KIND_GPU instance runs on the GPU Triton gave it (`runtimes.instance_device`); with an engine, SigLIP's torch
weights are never put on the GPU (`runtimes.load_device` / `outside_engine`).
"""

from __future__ import annotations

import torch
from videoitg.python_backend.common import (
    RequestCounters,
    StepRuntimeMetric,
    input_numpy,
    input_torch,
    output_torch,
    respond_each,
    setup,
)
from videoitg.python_backend.steps import check_frames, device_dtype, frame_count

from videoitg.engines.runtimes import instance_device, load_device, open_vision, outside_engine, use_device
from videoitg.errors import InputError
from videoitg.limits import Limits
from videoitg.preprocess import pixel_values


class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.device, self.dtype = device_dtype({**p, "device": instance_device(args, p.get("device", "cpu"))})
        use_device(self.device)
        runtime = p.get("vision_runtime", "torch")
        model, _ = assets.load_part("vision", load_device(runtime, self.device), self.dtype)
        outside_engine(model, "vision", runtime, self.device)
        self.runtime = open_vision(runtime, model, engines=assets.engines, checkpoint_identity=assets.identity())
        self.counters = RequestCounters("videoitg_vision")
        self.runtime_metric = StepRuntimeMetric("videoitg_vision", self.runtime.runtime)
        # Warm-up: the first forward pays one-time kernel/allocator setup that should not land on a request.
        self.image_size = s = model.config.vision.image_size
        self.limits = Limits.from_mapping(p)
        self.features(torch.zeros(2, 3, s, s, device=self.device, dtype=self.dtype))

    def finalize(self):
        self.counters.close()
        self.runtime_metric.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        def handle(request):
            frames = input_torch(request, "PIXEL_VALUES")  # [1, T, 3, S, S]: one video a request
            if frames.shape[0] != 1:
                raise InputError(f"PIXEL_VALUES must hold one video a request (batch axis 1), got {frames.shape[0]}")
            num_frames = frame_count(input_numpy(request, "NUM_FRAMES"))
            check_frames(frames[0], self.image_size, self.limits, num_frames)
            pv = pixel_values(frames[0].to(self.device), self.dtype)
            return pb_utils.InferenceResponse([output_torch("FEATURES", self.features(pv, num_frames)[None])])

        return self.counters.count(respond_each(requests, handle, "videoitg_vision"))

    def features(self, pv: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        return self.runtime.visual_features(pv, num_frames).to(self.device, self.dtype)
