"""`videoitg_vision`: frames [T, 3, S, S] (uint8 from the python decoder, or SigLIP pixel values from DALI) ->
projected visual features [T, hw², H].

The encoder runs on the runtime the repository generator chose from the engines directory (`vision_runtime`:
torch, onnxruntime or tensorrt; `videoitg.engines.runtimes.open_vision` checks the engine's manifest against this
checkpoint); the projector is always the core model's. The `videoitg_step_runtime` metric says which one answers.
"""

from __future__ import annotations

import torch
from videoitg.python_backend.common import (
    RequestCounters,
    StepRuntimeMetric,
    input_torch,
    output_torch,
    respond_each,
    setup,
)

from videoitg.checkpoint import checkpoint_identity
from videoitg.engines.runtimes import open_vision
from videoitg.errors import InputError
from videoitg.preprocess import pixel_values
from videoitg.serving.steps import device_dtype, limits_from, load_part, resolve_checkpoint


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        self.device, self.dtype = device_dtype(p)
        ckpt = resolve_checkpoint(p.get("checkpoint", "default"))
        model, _ = load_part(ckpt, "vision", self.device, self.dtype)
        self.runtime = open_vision(p.get("vision_runtime", "torch"), model, engines=p.get("engines") or None,
                                   checkpoint_identity=checkpoint_identity(ckpt),
                                   chunk_frames=int(p.get("chunk_frames", 64)))
        self.counters = RequestCounters("videoitg_vision")
        self.runtime_metric = StepRuntimeMetric("videoitg_vision", self.runtime.runtime)
        # Warm-up: the first forward pays one-time kernel/allocator setup that should not land on a request.
        self.image_size = s = model.config.vision.image_size
        self.max_frames = limits_from(p).max_sampled_frames
        self.features(torch.zeros(2, 3, s, s, device=self.device, dtype=self.dtype))

    def finalize(self):
        self.counters.close()
        self.runtime_metric.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        def handle(request):
            frames = input_torch(request, "PIXEL_VALUES").to(self.device)
            if frames.dim() != 4 or frames.shape[1] != 3 or frames.shape[2] != self.image_size or \
                    frames.shape[3] != self.image_size:
                raise InputError(f"PIXEL_VALUES must be [T, 3, {self.image_size}, {self.image_size}], got "
                                 f"{list(frames.shape)}")
            if frames.shape[0] > self.max_frames:
                raise InputError(f"PIXEL_VALUES holds {frames.shape[0]} frames, over the limit of {self.max_frames}")
            pv = pixel_values(frames, self.dtype)
            return pb_utils.InferenceResponse([output_torch("FEATURES", self.features(pv))])

        return self.counters.count(respond_each(requests, handle, "videoitg_vision"))

    def features(self, pv: torch.Tensor) -> torch.Tensor:
        return self.runtime.visual_features(pv).to(self.device, self.dtype)
