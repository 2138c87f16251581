"""`videoitg_vision`: SigLIP-ready frames [T, 3, S, S] -> projected visual features [T, hw², H].

The encoder runs in the runtime the repository generator chose (`vision_runtime` parameter):
- `torch`: the core model's `visual_features` (SigLIP through the selected layer, then the seq_mlp projector);
- `onnxruntime`: an exported encoder graph (pixel_values -> SigLIP features), then the core projector;
- `tensorrt`: the `tensorrt_plan` model named by `encoder_model`, called by BLS in chunks of frames, then the core
  projector. Unverified here (no TensorRT on this workplace's machines).
"""

from __future__ import annotations

import torch

from python_backend.common import RequestCounters, error, input_torch, output_torch, setup
from videoitg.serving.steps import device_dtype, load_part, resolve_checkpoint


class TritonPythonModel:
    def initialize(self, args):
        _, p = setup(args)
        self.device, self.dtype = device_dtype(p)
        self.model, _ = load_part(resolve_checkpoint(p.get("checkpoint", "default")), "vision",
                                  self.device, self.dtype)
        self.runtime = p.get("vision_runtime", "torch")
        self.chunk = int(p.get("chunk_frames", 64))
        self.encoder_model = p.get("encoder_model", "")
        self.ort = None
        if self.runtime == "onnxruntime":
            import onnxruntime as ort

            providers = ["CUDAExecutionProvider"] if self.device.startswith("cuda") else []
            self.ort = ort.InferenceSession(p["vision_engine"], providers=providers + ["CPUExecutionProvider"])
        self.counters = RequestCounters("videoitg_vision")
        # Warm-up: the first forward pays one-time kernel/allocator setup that should not land on a request.
        s = self.model.config.vision.image_size
        self.features(torch.zeros(2, 3, s, s, device=self.device, dtype=self.dtype))

    def finalize(self):
        self.counters.close()

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                pv = input_torch(request, "PIXEL_VALUES").to(self.device, self.dtype)
                feats = self.features(pv)
                import triton_python_backend_utils as pb_utils

                responses.append(pb_utils.InferenceResponse([output_torch("FEATURES", feats)]))
            except Exception as e:
                responses.append(error(e, "videoitg_vision"))
        return self.counters.count(responses)

    @torch.inference_mode()
    def features(self, pv: torch.Tensor) -> torch.Tensor:
        if self.runtime == "torch":
            return self.model.visual_features(pv, chunk_frames=self.chunk)
        hw = self.model.config.tokens_per_side(pv.shape[0])
        return self.model.project(self.encode(pv), hw)

    def encode(self, pv: torch.Tensor) -> torch.Tensor:
        """SigLIP features [T, g², Cv] from an engine, chunk by chunk (bounded activation memory)."""
        outs = []
        for c in pv.split(self.chunk):
            if self.ort is not None:
                name = self.ort.get_inputs()[0].name
                y = self.ort.run(None, {name: c.float().cpu().numpy()})[0]
                outs.append(torch.from_numpy(y).to(self.device, self.dtype))
            else:
                outs.append(self._trt_chunk(c))
        return torch.cat(outs)

    def _trt_chunk(self, c: torch.Tensor) -> torch.Tensor:
        import triton_python_backend_utils as pb_utils

        from python_backend.common import response_tensor

        req = pb_utils.InferenceRequest(model_name=self.encoder_model, requested_output_names=["features"],
                                        inputs=[output_torch("pixel_values", c.contiguous())])
        resp = req.exec()
        if resp.has_error():
            raise RuntimeError(resp.error().message())
        return response_tensor(resp, "features").to(self.dtype)
