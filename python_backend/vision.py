"""`videoitg_vision`: SigLIP-ready frames [T, 3, S, S] -> projected visual features [T, hw², H].

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
from videoitg.serving.steps import device_dtype, load_part, resolve_checkpoint


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
        s = model.config.vision.image_size
        self.features(torch.zeros(2, 3, s, s, device=self.device, dtype=self.dtype))

    def finalize(self):
        self.counters.close()
        self.runtime_metric.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        def handle(request):
            pv = input_torch(request, "PIXEL_VALUES").to(self.device, self.dtype)
            return pb_utils.InferenceResponse([output_torch("FEATURES", self.features(pv))])

        return self.counters.count(respond_each(requests, handle, "videoitg_vision"))

    def features(self, pv: torch.Tensor) -> torch.Tensor:
        return self.runtime.visual_features(pv).to(self.device, self.dtype)
