"""`videoitg_vision`: SigLIP-ready frames [T, 3, S, S] -> projected visual features [T, hw², H].

The encoder runs in the runtime the repository generator chose (`vision_runtime` parameter):
- `torch`: the core model's `visual_features` (SigLIP through the selected layer, then the seq_mlp projector);
- `onnxruntime`: engine_build's exported graph through `videoitg.engines.runtimes.open_vision` (the manifest is checked
  against this checkpoint), then the core projector;
- `tensorrt`: the `tensorrt_plan` model named by `encoder_model`, called by BLS in chunks of frames, then the core
  projector. Unverified here (no TensorRT on this workplace's machines).
An engine exported with the projector fused at one hw answers only videos with that hw; other lengths take the
torch path (hw depends on the frame count).
"""

from __future__ import annotations

from pathlib import Path

import torch
from videoitg.python_backend.common import (
    RequestCounters,
    input_torch,
    output_torch,
    respond_each,
    response_tensor,
    setup,
)

from videoitg.serving.steps import device_dtype, load_part, resolve_checkpoint


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        self.device, self.dtype = device_dtype(p)
        ckpt = resolve_checkpoint(p.get("checkpoint", "default"))
        self.model, _ = load_part(ckpt, "vision", self.device, self.dtype)
        self.runtime = p.get("vision_runtime", "torch")
        self.chunk = int(p.get("chunk_frames", 64))
        self.encoder_model = p.get("encoder_model", "")
        self.engine = None
        self.fused_hw: int | None = None
        if self.runtime == "onnxruntime":
            from videoitg.checkpoint import checkpoint_identity
            from videoitg.engines.runtimes import open_vision

            engines = Path(p["vision_engine"]).parents[1]  # ENGINES/onnx/vision.onnx -> ENGINES
            self.engine = open_vision(engines, "onnxruntime", checkpoint_identity=checkpoint_identity(ckpt),
                                      chunk=self.chunk)
            self.fused_hw = self.engine.fused_hw
        elif self.runtime == "tensorrt":
            from videoitg.engines.manifest import EngineManifest

            self.fused_hw = EngineManifest.read(p["vision_engine"]).extra.get("fused_hw")
        self.counters = RequestCounters("videoitg_vision")
        # Warm-up: the first forward pays one-time kernel/allocator setup that should not land on a request.
        s = self.model.config.vision.image_size
        self.features(torch.zeros(2, 3, s, s, device=self.device, dtype=self.dtype))

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        def handle(request):
            pv = input_torch(request, "PIXEL_VALUES").to(self.device, self.dtype)
            return pb_utils.InferenceResponse([output_torch("FEATURES", self.features(pv))])

        return self.counters.count(respond_each(requests, handle, "videoitg_vision"))

    @torch.inference_mode()
    def features(self, pv: torch.Tensor) -> torch.Tensor:
        hw = self.model.config.tokens_per_side(pv.shape[0])
        if self.runtime == "torch" or (self.fused_hw is not None and self.fused_hw != hw):
            return self.model.visual_features(pv, chunk_frames=self.chunk)
        feats = self.engine.encode(pv) if self.engine is not None else self._trt_encode(pv)
        feats = feats.to(self.device, self.dtype)
        return feats if self.fused_hw is not None else self.model.project(feats, hw)

    def _trt_encode(self, pv: torch.Tensor) -> torch.Tensor:
        """BLS calls to the tensorrt_plan model, chunk by chunk (the plan's profile bounds the frames per call)."""
        import triton_python_backend_utils as pb_utils

        out = "visual" if self.fused_hw is not None else "features"  # engine_build's export names
        parts = []
        for c in pv.split(self.chunk):
            resp = pb_utils.InferenceRequest(model_name=self.encoder_model, requested_output_names=[out],
                                             inputs=[output_torch("pixel_values", c.contiguous())]).exec()
            if resp.has_error():
                raise RuntimeError(f"{self.encoder_model}: {resp.error().message()}")
            parts.append(response_tensor(resp, out))
        return torch.cat(parts)
