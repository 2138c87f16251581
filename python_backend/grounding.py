"""`videoitg_grounding`: (visual features, instruction) -> per-frame logits, on the runtime the repository chose."""

from __future__ import annotations

from typing import Any

import torch
import triton_python_backend_utils as pb_utils

from videoitg.contract.parameters import GroundingParameters
from videoitg.contract.protocol import FEATURES, GROUNDING, INSTRUCTION, LOGITS
from videoitg.engines.runtimes import (
    load_device,
    max_sequence_length,
    open_grounding,
    outside_engine,
    prove_grounding,
    require_finite,
    use_device,
)
from videoitg.errors import InputError
from videoitg.request.text import instruction_ids

from .checks import check_features, one_video
from .metrics import RequestCounters, damage_metric, finalized, step_runtime_metric
from .params import StepAssets, device_dtype, setup, step_precision
from .responses import error
from .tensors import input_numpy, input_torch, output_torch


class TritonPythonModel:
    """Dynamic batching with ragged inputs hands this model videos of different lengths at once: each request is
    checked on its own (a bad one gets its own error) and scored alone (no padding: the numbers in-process scoring
    gives). With an engine runtime the decoder layers the engine runs never reach the GPU (`runtimes.load_device` /
    `outside_engine`), and a plan shorter than what the limits admit is refused at load."""

    def initialize(self, args: dict[str, Any]) -> None:
        p = setup(args, GroundingParameters)
        assets = StepAssets.of_model(args, p, p.engines)
        self.device, self.dtype = device_dtype(p.device, p.dtype, args, p.precision)
        use_device(self.device)
        self.limits = p.limits
        runtime = p.grounding_runtime
        device = load_device(runtime, self.device)
        self.model, self.tokenizer, identity = assets.load_served(
            "grounding", device, self.dtype, runtime, p.checkpoint_identity)  # other weights: refused
        self.limits.check_model(self.model.config)  # refuse to load if some admitted video leaves no room
        outside_engine(self.model, "grounding", runtime, self.device)
        longest = max_sequence_length(self.model.config, self.limits.max_sampled_frames,
                                      self.limits.max_instruction_tokens)
        self.runtime = open_grounding(runtime, self.model, engines=assets.engines, checkpoint=assets.checkpoint,
                                      checkpoint_identity=identity, max_num_tokens=longest,
                                      precision=step_precision(p.precision))
        self.runtime.check_admits(longest)
        # The language model proves itself (finite logits, else the load is refused naming the checkpoint); this
        # first forward also takes the first call's setup off the request path.
        prove_grounding(lambda v, i: self.score([v], [i])[0], self.model.config, self.tokenizer, self.device,
                        self.dtype, assets.checkpoint, self.runtime.runtime)
        self.served = (f"the language model's logits ({self.runtime.runtime} runtime, "
                       f"{str(self.dtype).removeprefix('torch.')} on {self.device})")
        self.counters = RequestCounters(GROUNDING)
        self.runtime_metric = step_runtime_metric(GROUNDING, self.runtime.runtime)
        self.damage = damage_metric(GROUNDING)

    def finalize(self) -> None:
        finalized(self.counters, self.runtime_metric, self.damage)

    def execute(self, requests: list[Any]) -> list[Any] | None:
        responses: list = [None] * len(requests)
        good: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for i, request in enumerate(requests):
            try:
                visual = one_video(input_torch(request, FEATURES), FEATURES)  # [T, n, H]
                check_features(visual, self.model.config, self.limits)
                text = input_numpy(request, INSTRUCTION)
                if text is None or text.size != 1:
                    raise InputError(f"{INSTRUCTION} must hold one string")
                ids = instruction_ids(self.tokenizer, bytes(text.reshape(-1)[0]), self.model.config, self.limits,
                                      visual.shape[0])  # visual: [T, hw², H], T sampled frames
                self.model.layout(visual, ids)  # the model's own length rule
                good.append((i, visual.to(self.device, self.dtype), ids.to(self.device)))
            except Exception as e:
                responses[i] = error(e, GROUNDING)
        for i, visual, ids in good:
            try:
                logits = require_finite(self.score([visual], [ids])[0], self.served)  # NaN: the server's fault
                responses[i] = pb_utils.InferenceResponse([output_torch(LOGITS, logits.float()[None])])
            except Exception as e:
                responses[i] = error(e, GROUNDING)
        return self.counters.count(responses)

    def score(self, visual: list[torch.Tensor], ids: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-frame fp32 logits of each (visual [T, n, H], instruction ids) pair, one request at a time."""
        return [self.runtime.score(v, i) for v, i in zip(visual, ids, strict=True)]
