"""`videoitg_grounding`: owns the tokenizer and the grounding LLM. (visual features, instruction) -> per-frame logits.

The LLM runs on the runtime the repository generator chose from the engines directory (`grounding_runtime`:
torch, onnxruntime, tensorrt or trtllm, through `videoitg.engines.runtimes.open_grounding`); the
`videoitg_step_runtime` metric says which one answers. Dynamic batching with ragged inputs hands this model
several requests at once, possibly for videos of different lengths. Each is checked on its own, features
(`steps.check_features`) and instruction (`videoitg.text.instruction_ids`: text, max_instruction_tokens, and the
model's length budget after this video's visual tokens), so a bad one gets its own error, and each good one is
scored alone (no padding: the same numbers as in-process, and no padded attention wasted on the shorter videos).

A KIND_GPU instance runs on the GPU Triton gave it (`runtimes.instance_device`). With an engine runtime the
checkpoint part is loaded on the CPU, the decoder layers the engine runs are dropped there, and only what stays
outside the engine (token embeddings, final norm, head) moves to the GPU (`runtimes.load_device` /
`outside_engine`), so the 7B layers never sit on the GPU beside the engine. A TensorRT plan whose profile is
shorter than what these limits admit is refused at load (`GroundingRuntime.check_admits`).
"""

from __future__ import annotations

import torch
from videoitg.python_backend.common import (
    RequestCounters,
    StepRuntimeMetric,
    error,
    input_numpy,
    input_torch,
    output_torch,
    setup,
)
from videoitg.python_backend.steps import check_features, device_dtype

from videoitg.engines.runtimes import (
    instance_device,
    load_device,
    max_sequence_length,
    open_grounding,
    outside_engine,
    use_device,
)
from videoitg.errors import InputError
from videoitg.limits import Limits
from videoitg.text import encode_instruction, instruction_ids


class TritonPythonModel:
    def initialize(self, args):
        p, assets = setup(args)
        self.device, self.dtype = device_dtype({**p, "device": instance_device(args, p.get("device", "cpu"))})
        use_device(self.device)
        self.limits = Limits.from_mapping(p)
        runtime = p.get("grounding_runtime", "torch")
        self.model, self.tokenizer = assets.load_part("grounding", load_device(runtime, self.device), self.dtype)
        self.limits.check_model(self.model.config)  # refuse to load if some admitted video leaves no room
        outside_engine(self.model, "grounding", runtime, self.device)
        self.runtime = open_grounding(runtime, self.model, engines=assets.engines, checkpoint=assets.checkpoint,
                                      checkpoint_identity=assets.identity())
        self.runtime.check_admits(max_sequence_length(self.model.config, self.limits.max_sampled_frames,
                                                      self.limits.max_instruction_tokens))
        self.counters = RequestCounters("videoitg_grounding")
        self.runtime_metric = StepRuntimeMetric("videoitg_grounding", self.runtime.runtime)
        # Warm-up (first-call setup off the request path): two frames of one token each, a short instruction.
        h = self.model.config.text.hidden_size
        self.score([torch.zeros(2, 1, h, device=self.device, dtype=self.dtype)],
                   [encode_instruction(self.tokenizer, "warm up")])

    def finalize(self):
        self.counters.close()
        self.runtime_metric.close()

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        responses: list = [None] * len(requests)
        good: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for i, request in enumerate(requests):
            try:
                visual = input_torch(request, "FEATURES")  # [1, T, n, H]: one video a request
                if visual.shape[0] != 1:
                    raise InputError(f"FEATURES must hold one video a request (batch axis 1), got {visual.shape[0]}")
                visual = visual[0]
                check_features(visual, self.model.config, self.limits)
                text = input_numpy(request, "INSTRUCTION")
                if text is None or text.size != 1:
                    raise InputError("INSTRUCTION must hold one string")
                ids = instruction_ids(self.tokenizer, bytes(text.reshape(-1)[0]), self.model.config, self.limits,
                                      visual.shape[0])  # visual: [T, hw², H], T sampled frames
                self.model.layout(visual, ids)  # the model's own length rule
                good.append((i, visual.to(self.device, self.dtype), ids.to(self.device)))
            except Exception as e:
                responses[i] = error(e, "videoitg_grounding")
        for i, visual, ids in good:
            try:
                logits = self.score([visual], [ids])[0]
                responses[i] = pb_utils.InferenceResponse([output_torch("LOGITS", logits.float()[None])])
            except Exception as e:
                responses[i] = error(e, "videoitg_grounding")
        return self.counters.count(responses)

    def score(self, visual: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-frame fp32 logits of each (visual [T, n, H], instruction ids) pair, one request at a time."""
        return [self.runtime.score(v, i) for v, i in zip(visual, ids, strict=True)]
